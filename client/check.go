package client

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// CheckProblem is one problem keel check found.
type CheckProblem struct {
	// Kind is "leftover", "blob", "snapshot", "ingest" or "task".
	Kind string `json:"kind"`
	// Object names what is wrong (a path, a digest, a snapshot...).
	Object  string `json:"object"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
	// Safe tells that a check with repair applies Fix itself.
	Safe        bool   `json:"safe"`
	Repaired    bool   `json:"repaired"`
	RepairError string `json:"repair_error,omitempty"`
}

// CheckReport is what keel check found (and repaired).
type CheckReport struct {
	Problems []CheckProblem `json:"problems"`
	// Errors are checks that could not run: the report is incomplete.
	Errors []string `json:"errors,omitempty"`
}

// Exit statuses of keel check.
const (
	CheckClean    = 0 // nothing wrong, or everything repaired
	CheckProblems = 1 // problems left
	CheckError    = 2 // the check could not run (in full)
)

// ExitStatus is keel check's exit status for r.
func (r CheckReport) ExitStatus() int {
	if len(r.Errors) > 0 {
		return CheckError
	}
	for _, p := range r.Problems {
		if !p.Repaired {
			return CheckProblems
		}
	}
	return CheckClean
}

// WriteTable prints r for people: one row per problem, then the errors.
func (r CheckReport) WriteTable(w io.Writer) error {
	left := 0
	if len(r.Problems) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tOBJECT\tPROBLEM\tFIX")
		for _, p := range r.Problems {
			fix := p.Fix
			switch {
			case p.Repaired:
				fix = "repaired: " + fix
			case p.RepairError != "":
				fix += " (repair failed: " + p.RepairError + ")"
				left++
			case p.Safe:
				fix += " (--repair does it)"
				left++
			default:
				left++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Kind, p.Object, p.Problem, fix)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	switch {
	case len(r.Errors) > 0:
		fmt.Fprintf(w, "check incomplete: %d problems left, %d checks failed\n", left, len(r.Errors))
	case left == 0 && len(r.Problems) > 0:
		fmt.Fprintf(w, "all %d problems repaired\n", len(r.Problems))
	case left == 0:
		fmt.Fprintln(w, "clean")
	default:
		fmt.Fprintf(w, "%d problems\n", left)
	}
	return nil
}

// CheckReportFromProto converts keeld's answer.
func CheckReportFromProto(resp *keelv1.CheckResponse) CheckReport {
	rep := CheckReport{Problems: []CheckProblem{}, Errors: resp.Errors}
	for _, p := range resp.Problems {
		rep.Problems = append(rep.Problems, CheckProblem{Kind: p.Kind, Object: p.Object, Problem: p.Problem,
			Fix: p.Fix, Safe: p.Safe, Repaired: p.Repaired, RepairError: p.RepairError})
	}
	return rep
}

// Check runs keel check in keeld: every committed blob hashed, snapshot
// records against the plugins, leftovers of a killed keeld, ingests and
// tasks. With repair, the safe fixes are applied.
func (c *Client) Check(ctx context.Context, repair bool) (CheckReport, error) {
	resp, err := keelv1.NewCheckClient(c.conn).Check(ctx, &keelv1.CheckRequest{Repair: repair})
	if err != nil {
		return CheckReport{}, err
	}
	return CheckReportFromProto(resp), nil
}
