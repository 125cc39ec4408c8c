package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keel-runtime/keel/client"
)

// eventJSON is an event as `keel events --format json` prints it, one per
// line.
type eventJSON struct {
	Sequence  uint64          `json:"sequence"`
	Epoch     string          `json:"epoch"`
	Timestamp time.Time       `json:"timestamp"`
	Namespace string          `json:"namespace,omitempty"`
	Topic     string          `json:"topic,omitempty"`
	Event     json.RawMessage `json:"event,omitempty"`
	Missed    *uint64         `json:"missed,omitempty"`
	Restarted bool            `json:"restarted,omitempty"`
}

var payloadJSON = protojson.MarshalOptions{UseProtoNames: true}

func eventsCommand(g *globals) *cobra.Command {
	var (
		filters []string
		since   uint64
		epoch   string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream keeld's events (every namespace) until interrupted",
		Long: `Stream keeld's events of every namespace, one line each: time, sequence
number, namespace, topic and payload. --filter selects with containerd's
filter syntax over topic, namespace and event.<field> (repeat it to or).
--since SEQ replays the events keeld still keeps after SEQ (0: all of
them) first; what keeld no longer keeps is reported as "missed N".`,
		Args: cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			opts := []client.SubscribeOpt{client.WithEventFilters(filters...)}
			if cmd.Flags().Changed("since") {
				opts = append(opts, client.WithEventsSince(since, epoch))
			}
			ctx := cmd.Context()
			evs, errs, err := c.Subscribe(ctx, opts...)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for ev := range evs {
				if err := g.printEvent(out, ev); err != nil {
					return err
				}
			}
			if err := <-errs; err != nil {
				return err
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringArrayVar(&filters, "filter", nil, "containerd filter over topic, namespace, event.<field> (repeatable: any may match)")
	f.Uint64Var(&since, "since", 0, "replay the kept events after this sequence number first")
	f.StringVar(&epoch, "epoch", "", "the keeld epoch --since belongs to (a restart since is reported)")
	return cmd
}

func (g *globals) printEvent(w io.Writer, ev client.Event) error {
	var payload []byte
	if ev.Payload != nil {
		var err error
		if payload, err = payloadJSON.Marshal(ev.Payload); err != nil {
			return err
		}
	}
	if g.format == "json" {
		out := eventJSON{
			Sequence: ev.Sequence, Epoch: ev.Epoch, Timestamp: ev.Timestamp,
			Namespace: ev.Namespace, Topic: ev.Topic, Event: payload,
		}
		if ev.Missed != nil {
			out.Missed, out.Restarted = &ev.Missed.Count, ev.Missed.Restarted
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	ts := ev.Timestamp.Local().Format(time.RFC3339Nano)
	if ev.Missed != nil {
		msg := fmt.Sprintf("missed %d events", ev.Missed.Count)
		if ev.Missed.Restarted {
			msg += " (keeld restarted: epoch " + ev.Epoch + ")"
		}
		_, err := fmt.Fprintf(w, "%s %d %s\n", ts, ev.Sequence, msg)
		return err
	}
	ns := ev.Namespace
	if ns == "" {
		ns = "-"
	}
	_, err := fmt.Fprintf(w, "%s %d %s %s %s\n", ts, ev.Sequence, ns, ev.Topic, payload)
	return err
}
