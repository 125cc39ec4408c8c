package server

import (
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/sdk/filters"
)

// The envelope adaptor exposes topic, namespace and the payload's fields
// under event, as containerd's events filter does.
func TestEnvelopeFilters(t *testing.T) {
	env := func(ns, topic string, ev any) events.Envelope {
		return events.Envelope{Sequence: 1, Timestamp: time.Now(), Namespace: ns, Topic: topic, Event: ev}
	}
	exit := env("default", "/tasks/exit", events.Task{ID: "web", Pid: 42, ExitStatus: 3})
	img := env("prod", events.TopicImageCreate, events.Image{Name: "docker.io/library/busybox:1", Labels: map[string]string{"io.keel/tier": "base"}})
	plugin := env("", events.TopicPluginRestarted, events.Plugin{Kind: "content", Name: "local", Restarts: 2})
	for _, tc := range []struct {
		filter string
		want   []events.Envelope
	}{
		{``, []events.Envelope{exit, img, plugin}},
		{`topic=="/tasks/exit"`, []events.Envelope{exit}},
		{`topic~="^/(tasks|images)/"`, []events.Envelope{exit, img}},
		{`namespace==default`, []events.Envelope{exit}},
		{`namespace`, []events.Envelope{exit, img}},
		{`namespace!=default`, []events.Envelope{img, plugin}},
		{`event.id==web,event.exit_status==3`, []events.Envelope{exit}},
		{`event.pid==42`, []events.Envelope{exit}},
		{`event.labels."io.keel/tier"==base`, []events.Envelope{img}},
		{`event.name~=busybox`, []events.Envelope{img}},
		{`event.name==local,event.restarts==2`, []events.Envelope{plugin}},
		{`event.id`, []events.Envelope{exit}},
		{`event.nosuchfield`, nil},
		{`event.labels`, nil},
		{`event`, nil},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			f, err := filters.Parse(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var got []events.Envelope
			for _, ev := range []events.Envelope{exit, img, plugin} {
				if filters.Match(f, envelopeAdaptor{envelopeToProto(ev)}) {
					got = append(got, ev)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("matched %d, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				if got[i].Topic != tc.want[i].Topic {
					t.Fatalf("matched %s, want %s", got[i].Topic, tc.want[i].Topic)
				}
			}
		})
	}
}
