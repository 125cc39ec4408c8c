package check

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// TaskIDSep joins a namespace and a container id into a runtime's task id.
const TaskIDSep = "--"

// tasks checks every task the runtimes report against the containers and
// against its shim, as the runtime sees it.
func (c *Checker) tasks(ctx context.Context) ([]Problem, error) {
	names := make([]string, 0, len(c.Runtimes))
	for name := range c.Runtimes {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []Problem
	var errs []error
	for _, name := range names {
		rt := c.Runtimes[name]
		states, err := rt.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("runtime %s: %w", name, err))
			continue
		}
		for _, st := range states {
			if p, ok := c.task(ctx, name, rt, st); ok {
				out = append(out, p)
			}
		}
	}
	return out, joinErrs(errs)
}

func (c *Checker) task(ctx context.Context, name string, rt runtime.Runtime, st runtime.TaskState) (Problem, bool) {
	p := Problem{Kind: KindTask, Object: name + "/" + st.ID}
	remove := func(ctx context.Context) error {
		_, err := rt.Delete(ctx, st.ID, "")
		return notFoundOK(err)
	}
	ns, id, ok := strings.Cut(st.ID, TaskIDSep)
	owned := false
	if ok {
		ct, err := c.DB.Containers().Get(scope.WithNamespace(ctx, ns), id)
		owned = err == nil && ct.Runtime == name
	}
	switch {
	case !owned && st.Status == runtime.StatusStopped:
		p.Problem = "stopped task of no container"
		p.Fix = "delete the task"
		p.Safe, p.repair = true, remove
	case !owned:
		p.Problem = fmt.Sprintf("%s task of no container (pid %d)", st.Status, st.Pid)
		p.Fix = "kill it (its container record is gone), then delete it; check --repair deletes it once stopped"
	case st.Status == runtime.StatusUnknown:
		p.Problem = "its shim does not answer: " + st.Reason
		p.Fix = fmt.Sprintf("wait for the shim; if it is hung, kill the shim process (the runtime then reports the task stopped) and delete the task (keel task delete -n %s %s)", ns, id)
	case st.Status == runtime.StatusStopped && st.Reason != "":
		p.Problem = "its shim died: " + st.Reason
		p.Fix = fmt.Sprintf("delete the task (keel task delete -n %s %s)", ns, id)
		p.Safe, p.repair = true, remove
	default:
		return Problem{}, false
	}
	return p, true
}
