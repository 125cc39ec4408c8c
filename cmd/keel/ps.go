package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// psJSON is a `keel ps` row as `--format json` prints it.
type psJSON struct {
	ID         string     `json:"id"`
	Image      string     `json:"image"`
	Command    string     `json:"command"`
	Status     string     `json:"status"`
	State      string     `json:"state"`
	ExitStatus *uint32    `json:"exit_status,omitempty"`
	ExitedAt   *time.Time `json:"exited_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	Ports      []string   `json:"ports"`
	Networks   []string   `json:"networks,omitempty"`
}

// psCommand is docker's ps over keel's records: container ls joined with
// task ls.
func psCommand(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List containers with their tasks (running ones; -a all)",
		Args:  cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ctx := cmd.Context()
			ctrs, err := c.Containers(ctx)
			if err != nil {
				return err
			}
			tasks, err := c.Tasks(ctx)
			if err != nil {
				return err
			}
			byID := map[string]client.TaskInfo{}
			for _, t := range tasks {
				byID[t.ID] = t
			}
			now := time.Now()
			t := table{header: []string{"CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "CREATED", "PORTS"}}
			values := []psJSON{}
			for _, ct := range ctrs {
				info := ct.Info()
				task, hasTask := byID[info.ID]
				running := hasTask && (task.Status == runtime.StatusRunning || task.Status == runtime.StatusPaused || task.Status == runtime.StatusPausing)
				if !all && !running {
					continue
				}
				v := psJSON{ID: info.ID, Image: info.Image, Command: psCommandLine(info), CreatedAt: info.CreatedAt, Ports: []string{}, State: "created"}
				if n := info.Network; n != nil {
					for _, p := range n.Ports {
						v.Ports = append(v.Ports, p.String())
					}
					v.Networks = n.Networks
				}
				v.Status = "Created"
				if hasTask {
					v.State = task.Status.String()
					switch {
					case running:
						v.Status = "Up"
						if start, ok := processStart(task.Pid); ok {
							v.Status = "Up " + units.HumanDuration(now.Sub(start))
						}
						if task.Status != runtime.StatusRunning {
							v.Status += " (Paused)"
						}
					case task.Status == runtime.StatusStopped:
						code := task.ExitStatus
						v.ExitStatus = &code
						v.Status = fmt.Sprintf("Exited (%d)", code)
						if !task.ExitedAt.IsZero() {
							at := task.ExitedAt
							v.ExitedAt = &at
							v.Status += " " + units.HumanDuration(now.Sub(at)) + " ago"
						}
					}
				}
				t.rows = append(t.rows, []string{v.ID, v.Image, truncate(v.Command, 30), v.Status,
					units.HumanDuration(now.Sub(info.CreatedAt)) + " ago", strings.Join(v.Ports, ", ")})
				t.ids = append(t.ids, v.ID)
				values = append(values, v)
			}
			t.values = values
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "all containers, not only running ones")
	return cmd
}

// psCommandLine is the container's process args, quoted as docker ps does.
func psCommandLine(info client.ContainerInfo) string {
	if info.Spec == nil || info.Spec.Process == nil {
		return ""
	}
	return strconv.Quote(strings.Join(info.Spec.Process.Args, " "))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// processStart is when process pid started (keel's CLI runs on keeld's
// host): /proc/PID/stat's start time, in clock ticks after boot.
func processStart(pid uint32) (time.Time, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, false
	}
	// Fields after the command (in parentheses, which may hold spaces).
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 20 {
		return time.Time{}, false
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	boot, ok := bootTime()
	if !ok {
		return time.Time{}, false
	}
	const clkTck = 100 // USER_HZ, 100 on every Linux architecture Go runs on
	return boot.Add(time.Duration(ticks) * time.Second / clkTck), true
}

func bootTime() (time.Time, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(n, 0), err == nil
		}
	}
	return time.Time{}, false
}
