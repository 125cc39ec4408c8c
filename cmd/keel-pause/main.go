// Command keel-pause is the process of a CRI pod sandbox: it holds the
// pod's namespaces open and does nothing else. As PID 1 of the pod's PID
// namespace it reaps the zombies orphaned to it; SIGTERM or SIGINT end it
// with status 0. keel-cri packages it (static, CGO_ENABLED=0) as a local
// image, so pods need no registry.
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
		reap()
	}
}

// reap waits for every child that has exited: signals merge, so one
// SIGCHLD may stand for several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
