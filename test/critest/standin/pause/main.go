// Command pause stands in for the pause image's /pause (registry.k8s.io/
// pause): a pod's first process, which holds its namespaces and does
// nothing. Its name matters: a pod's containers share its PID namespace,
// and critest looks for its own processes (`pgrep sleep`) there. It
// reaps the orphans it inherits as PID 1 and exits on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
