package main

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

// taskMetricsCommand prints a task's cgroup metrics as keeld's /metrics
// exports them: containerd's names and labels, one row per sample.
func taskMetricsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "metrics CONTAINER",
		Short: "Print a task's cgroup metrics, named as containerd and keeld's /metrics name them",
		Args:  cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error {
			m, err := t.Metrics(cmd.Context())
			if err != nil {
				return err
			}
			samples, err := m.Samples(g.namespace, t.ID())
			if err != nil {
				return err
			}
			tb := table{header: []string{"METRIC", "LABELS", "VALUE"}, values: samples}
			for _, s := range samples {
				var labels []string
				for _, l := range s.Labels[2:] { // container_id and namespace are the task's
					labels = append(labels, l.Name+"="+strconv.Quote(l.Value))
				}
				tb.rows = append(tb.rows, []string{s.Name, strings.Join(labels, ","), strconv.FormatFloat(s.Value, 'f', -1, 64)})
				tb.ids = append(tb.ids, s.Name)
			}
			return g.print(cmd.OutOrStdout(), tb)
		}),
	}
}
