package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client"
)

// Which keeld events make which CRI container events, in a stream's order:
// a pod and its container made, started, stopped and removed, among
// events that make none.
func TestContainerEventOf(t *testing.T) {
	created := func(id string, labels map[string]string) client.Event {
		return client.Event{Topic: "/containers/create", Payload: &keelv1.ContainerEvent{Id: id, Labels: labels}}
	}
	deleted := func(id string) client.Event {
		return client.Event{Topic: "/containers/delete", Payload: &keelv1.ContainerEvent{Id: id}}
	}
	task := func(topic, id, exec string) client.Event {
		return client.Event{Topic: topic, Payload: &keelv1.TaskEvent{Id: id, ExecId: exec}}
	}
	const (
		none    = runtimeapi.ContainerEventType(-1)
		create  = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
		started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		gone    = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
	)
	pods := map[string]string{}
	for i, tc := range []struct {
		ev      client.Event
		id      string
		typ     runtimeapi.ContainerEventType
		wantPod string
	}{
		{created("pod", map[string]string{LabelKind: KindSandbox}), "pod", create, "pod"},
		{task("/tasks/start", "pod", ""), "pod", started, "pod"},
		{created("ctr", map[string]string{LabelKind: KindContainer, LabelSandboxID: "pod"}), "ctr", create, "pod"},
		{created("other", map[string]string{"app": "x"}), "", none, ""},
		{task("/tasks/start", "other", ""), "", none, ""},
		{task("/tasks/create", "ctr", ""), "", none, ""},
		{task("/tasks/start", "ctr", ""), "ctr", started, "pod"},
		{task("/tasks/exit", "ctr", "exec1"), "", none, ""},
		{task("/tasks/exit", "ctr", ""), "ctr", stopped, "pod"},
		{deleted("ctr"), "ctr", gone, "pod"},
		{deleted("other"), "", none, ""},
		{client.Event{Topic: "/containers/update", Payload: &keelv1.ContainerEvent{Id: "pod"}}, "", none, ""},
	} {
		id, typ, ok := containerEventOf(tc.ev, pods)
		if !ok {
			typ = none
		}
		if id != tc.id && ok || typ != tc.typ || ok && pods[id] != tc.wantPod {
			t.Errorf("event %d (%s): got %q %v (pod %q), want %q %v (pod %q)", i, tc.ev.Topic, id, typ, pods[id], tc.id, tc.typ, tc.wantPod)
		}
	}
}
