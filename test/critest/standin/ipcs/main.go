// Command ipcs stands in for the ipcs applet of the busybox critest runs
// (Debian's busybox-static has none): `ipcs -m` lists the System V
// shared memory segments of its IPC namespace, from /proc/sysvipc/shm, in
// the columns util-linux and busybox print. Other options are refused.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "-m" {
		fmt.Fprintln(os.Stderr, "usage: ipcs -m (the only listing this stand-in has)")
		os.Exit(2)
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipcs:", err)
		os.Exit(1)
	}
	defer f.Close()
	fmt.Printf("\n------ Shared Memory Segments --------\n%-10s %-10s %-10s %-10s %-10s %-10s %-6s\n",
		"key", "shmid", "owner", "perms", "bytes", "nattch", "status")
	s := bufio.NewScanner(f)
	s.Scan() // the header
	for s.Scan() {
		// key shmid perms size cpid lpid nattch uid gid ...
		c := strings.Fields(s.Text())
		if len(c) < 8 {
			continue
		}
		key, _ := strconv.ParseInt(c[0], 10, 64)
		perms, _ := strconv.ParseInt(c[2], 8, 64) // octal, as ls shows modes
		fmt.Printf("0x%08x %-10s %-10s %-10o %-10s %-10s\n", uint32(key), c[1], c[7], perms&0o777, c[3], c[6])
	}
}
