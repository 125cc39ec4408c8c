package runtime

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// reopener is a fake that reopens logs: the ids it was asked for.
type reopener struct {
	fake
	reopened []string
}

func (r *reopener) ReopenLog(_ context.Context, id string) error {
	if id != "t" {
		return notFound(id)
	}
	r.reopened = append(r.reopened, id)
	return nil
}

// ReopenLog crosses the wire to a runtime that has it, with its errors'
// classes; one without it answers NotImplemented, naming the capability.
func TestReopenLogOverTheWire(t *testing.T) {
	impl := &reopener{}
	rt, _ := serve(t, impl)
	ctx := t.Context()
	if err := ReopenLog(ctx, rt, "t"); err != nil || !slices.Equal(impl.reopened, []string{"t"}) {
		t.Errorf("ReopenLog = %v, reopened %v; want t reopened", err, impl.reopened)
	}
	if err := ReopenLog(ctx, rt, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("ReopenLog of an unknown task = %v, want NotFound", err)
	}

	without, _ := serve(t, &fake{})
	err := ReopenLog(ctx, without, "t")
	if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), CapabilityReopenLog) {
		t.Errorf("ReopenLog on a runtime without it = %v, want NotImplemented naming %q", err, CapabilityReopenLog)
	}
	if err := ReopenLog(ctx, NotImplemented{}, "t"); !errdefs.IsNotImplemented(err) {
		t.Errorf("ReopenLog on NotImplemented = %v, want NotImplemented", err)
	}
}

func TestReopenLogCapability(t *testing.T) {
	def := Plugin("x", "dev", nil)
	for _, tc := range []struct {
		name string
		impl io.Closer
		want bool
	}{
		{"reopener", &reopener{}, true},
		{"without", &fake{}, false},
	} {
		if got := slices.Contains(def.CapabilitiesFor(tc.impl), CapabilityReopenLog); got != tc.want {
			t.Errorf("%s: %s announced %v, want %v", tc.name, CapabilityReopenLog, got, tc.want)
		}
	}
}
