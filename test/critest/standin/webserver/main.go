// Command webserver stands in for the nginx and httpd images critest runs
// (registry.k8s.io/e2e-test-images/nginx, httpd, and cri-tools'
// hostnet-nginx), which cannot be pulled offline. It shows what critest
// looks for in them: a process named after its executable (pidof nginx)
// whose command line says "master process" (the PID namespace specs read
// /proc/1/cmdline), its pid in a pid file, a line naming it in its log,
// and HTTP 200 on its port. SIGTERM stops it, also as a container's PID 1.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const masterSuffix = ": master process"

func main() {
	port := flag.Int("port", 80, "TCP port to serve HTTP on")
	pidFile := flag.String("pid", "", "file to write the pid to")
	flag.Parse()
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	name := filepath.Base(self)
	// Run again under nginx's own process title, as nginx rewrites its
	// argv: the executable (and so the process name) stays the same.
	if !strings.HasSuffix(os.Args[0], masterSuffix) {
		argv := append([]string{name + masterSuffix}, os.Args[1:]...)
		fail(syscall.Exec(self, argv, os.Environ()))
	}
	if *pidFile != "" {
		if err := os.MkdirAll(filepath.Dir(*pidFile), 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile(*pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
			fail(err)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "<html><body><h1>Welcome to %s</h1><p>keel's critest stand-in.</p></body></html>\n", name)
	})
	fmt.Fprintf(os.Stderr, "%s: serving HTTP on :%d\n", name, *port)
	fail(http.ListenAndServe(fmt.Sprintf(":%d", *port), nil))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "webserver: %v\n", err)
	os.Exit(1)
}
