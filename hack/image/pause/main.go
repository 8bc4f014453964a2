// Command pause is the pod sandbox ("infra") container of the local cluster:
// it holds the pod's namespaces open by sleeping, reaps any child that is
// re-parented to it (it is PID 1 when the pod shares its PID namespace), and
// exits on SIGTERM or SIGINT. hack/image packs it, static, as the image
// containerd's sandbox_image names.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
