package critest

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The part of ginkgo v2's JSON report (types.Report) read here: critest
// writes it with --ginkgo.json-report.
type ginkgoReport struct {
	SuiteDescription string
	SuiteSucceeded   bool
	SpecReports      []ginkgoSpec
}

type ginkgoSpec struct {
	ContainerHierarchyTexts []string
	LeafNodeType            string
	LeafNodeText            string
	State                   string
	RunTime                 time.Duration
	Failure                 struct{ Message string }
}

// spec is one critest spec's outcome.
type spec struct {
	Name   string // containers and leaf, joined by spaces, as ginkgo prints
	State  string // passed, failed, skipped, or ginkgo's other end states
	Reason string // why it failed or was skipped: Message's first line
	// Message is ginkgo's whole failure or skip message.
	Message string
	Took    time.Duration
}

// result is a critest run's outcome, spec by spec.
type result struct {
	Specs []spec
	// Setup lists suite-level nodes (BeforeSuite…) that did not pass: a
	// failed one fails every spec.
	Setup []spec
}

// filteredReason is given to specs that critest did not select: ginkgo
// reports them as skipped with no message of their own.
const filteredReason = "not selected (ginkgo focus/skip; critest skips benchmark specs unless -benchmark)"

// parseReport reads a ginkgo JSON report.
func parseReport(path string) (result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return result{}, err
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(b, &reports); err != nil {
		return result{}, fmt.Errorf("ginkgo report %s: %w", path, err)
	}
	var r result
	for _, rep := range reports {
		for _, s := range rep.SpecReports {
			name := strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
			out := spec{Name: strings.TrimSpace(name), State: s.State, Reason: firstLine(s.Failure.Message), Message: s.Failure.Message, Took: s.RunTime}
			if s.LeafNodeType != "It" {
				if s.State != "passed" {
					out.Name = strings.TrimSpace(s.LeafNodeType + " " + out.Name)
					r.Setup = append(r.Setup, out)
				}
				continue
			}
			if out.State == "skipped" && out.Reason == "" {
				out.Reason = filteredReason
			}
			r.Specs = append(r.Specs, out)
		}
	}
	if len(r.Specs) == 0 {
		return r, fmt.Errorf("ginkgo report %s lists no specs", path)
	}
	return r, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// counts is how many specs ended in each state.
func (r result) counts() map[string]int {
	c := map[string]int{}
	for _, s := range r.Specs {
		c[s.State]++
	}
	return c
}

// summary is a table: the counts, then every spec that did not pass with
// its reason, failures first.
func (r result) summary(target string) string {
	var b strings.Builder
	c := r.counts()
	fmt.Fprintf(&b, "critest %s against %s: %d specs, %d passed, %d failed, %d skipped",
		criToolsVersion, target, len(r.Specs), c["passed"], c["failed"], c["skipped"])
	for state, n := range c {
		if state != "passed" && state != "failed" && state != "skipped" {
			fmt.Fprintf(&b, ", %d %s", n, state)
		}
	}
	b.WriteString("\n\n")
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tSPEC\tREASON")
	notPassed := slices.DeleteFunc(append(slices.Clone(r.Setup), r.Specs...), func(s spec) bool { return s.State == "passed" })
	// Failures before skips, each group in suite order.
	slices.SortStableFunc(notPassed, func(a, b spec) int {
		return boolInt(a.State == "skipped") - boolInt(b.State == "skipped")
	})
	for _, s := range notPassed {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.State, s.Name, s.Reason)
	}
	tw.Flush()
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
