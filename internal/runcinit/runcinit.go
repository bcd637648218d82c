// Package runcinit runs libcontainer's init (a binary started as "BINARY init", the process
// that sets a new container up from inside and then executes its first process) while the
// binary's packages initialise: those it does not import have not yet, which is as early as
// Go allows. nsbox and nsbox-init import it.
package runcinit

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
}
