package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// DefaultGCInterval is how often keeld collects garbage when the file does
// not say: often enough that expired leases do not linger.
const DefaultGCInterval = 10 * time.Minute

// GC tunes keeld's garbage collection.
type GC struct {
	// Interval between periodic collections; 0 turns the tick off
	// (collections still run after removals and on demand).
	Interval Duration `json:"interval"`
}

// Duration is a time.Duration written as "10m0s" in JSON.
type Duration time.Duration

// MarshalText writes d as time.Duration's String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// GCInterval is the periodic collection interval: the file's, else
// DefaultGCInterval.
func (c *Config) GCInterval() time.Duration {
	if c.GC == nil {
		return DefaultGCInterval
	}
	return time.Duration(c.GC.Interval)
}

type gcSchema struct {
	Interval      *string   `hcl:"interval,optional"`
	IntervalRange hcl.Range `hcl:"interval,attr_value_range"`
}

func decodeGC(g *gcSchema, fail func(r hcl.Range, summary, detail string, args ...any)) *GC {
	out := &GC{Interval: Duration(DefaultGCInterval)}
	if g.Interval != nil {
		d, err := time.ParseDuration(*g.Interval)
		switch {
		case err != nil:
			fail(g.IntervalRange, "Invalid gc interval", "interval %q is not a duration such as \"10m\" or \"0\": %v.", *g.Interval, err)
		case d < 0:
			fail(g.IntervalRange, "Invalid gc interval", "interval %q is negative.", *g.Interval)
		default:
			out.Interval = Duration(d)
		}
	}
	return out
}
