// Command nnp stands in for registry.k8s.io/e2e-test-images/nonewprivs:
// installed setuid root, it prints the effective uid it runs with, which
// is 0 unless no_new_privs kept the setuid bit from taking effect.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
