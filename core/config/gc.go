package config

import (
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// DefaultGCInterval is how often keeld collects garbage when the file does
// not say: often enough that expired leases do not linger.
const DefaultGCInterval = 10 * time.Minute

// DefaultGCIngestMaxAge is how long a partial ingest no writer or lease
// holds is kept when the file does not say: a day for a failed pull to be
// retried and resume it.
const DefaultGCIngestMaxAge = 24 * time.Hour

// GC tunes keeld's garbage collection.
type GC struct {
	// Interval between periodic collections; 0 turns the tick off
	// (collections still run after removals and on demand).
	Interval Duration `json:"interval"`
	// IngestMaxAge is how long a partial ingest (an upload never
	// committed, e.g. left by a failed pull) that no writer or live lease
	// holds is kept after its last write; 0 keeps it until `keel gc
	// --ingests`.
	IngestMaxAge Duration `json:"ingest_max_age"`
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

// GCIngestMaxAge is the age after which idle partial ingests are
// collected: the file's, else DefaultGCIngestMaxAge.
func (c *Config) GCIngestMaxAge() time.Duration {
	if c.GC == nil {
		return DefaultGCIngestMaxAge
	}
	return time.Duration(c.GC.IngestMaxAge)
}

type gcSchema struct {
	Interval          *string   `hcl:"interval,optional"`
	IntervalRange     hcl.Range `hcl:"interval,attr_value_range"`
	IngestMaxAge      *string   `hcl:"ingest_max_age,optional"`
	IngestMaxAgeRange hcl.Range `hcl:"ingest_max_age,attr_value_range"`
}

func decodeGC(g *gcSchema, fail failFunc) *GC {
	out := &GC{Interval: Duration(DefaultGCInterval), IngestMaxAge: Duration(DefaultGCIngestMaxAge)}
	decodeDuration(fail, g.Interval, g.IntervalRange, "gc interval", &out.Interval)
	decodeDuration(fail, g.IngestMaxAge, g.IngestMaxAgeRange, "gc ingest_max_age", &out.IngestMaxAge)
	return out
}

// failFunc reports a problem at r.
type failFunc func(r hcl.Range, summary, detail string, args ...any)

// decodeDuration sets *to from the attribute value v, when given: a Go
// duration, not negative. what names the key ("gc interval").
func decodeDuration(fail failFunc, v *string, r hcl.Range, what string, to *Duration) {
	if v == nil {
		return
	}
	name := what[strings.LastIndex(what, " ")+1:]
	d, err := time.ParseDuration(*v)
	switch {
	case err != nil:
		fail(r, "Invalid "+what, "%s %q is not a duration such as \"10m\" or \"0\": %v.", name, *v, err)
	case d < 0:
		fail(r, "Invalid "+what, "%s %q is negative.", name, *v)
	default:
		*to = Duration(d)
	}
}
