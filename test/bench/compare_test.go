package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A figure is one row of the summary table: one quantity measured on keel
// and on containerd alike, as the table defines it.
type figure struct {
	// order is the row's place in the table (the order).
	order int
	// name says what is measured, as the table words it.
	name string
	// unit is "ms", "MB/s", "MB" or "/s".
	unit string
	// ref names the reference figure measured beside it ("curl"), if any.
	ref string
}

// A side measures one round of one side of a comparison: a value per
// figure, in the order of the figures compared. The reference side gives
// NaN for a figure without a reference.
type side func(ctx context.Context, round int) ([]float64, error)

// sides are what comparePairs runs: keel, containerd, and optionally the
// references (curl, runc, GNU tar).
type sides struct {
	keel, containerd side
	ref              side
}

// benchRounds is $KEEL_BENCH_ROUNDS, the number of pairs each comparison
// runs (default 5).
func benchRounds(b *testing.B) int {
	s := os.Getenv("KEEL_BENCH_ROUNDS")
	if s == "" {
		return 5
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("KEEL_BENCH_ROUNDS=%q: want a positive number", s)
	}
	return n
}

// comparePairs runs benchRounds pairs of rounds, keel's and containerd's,
// interleaved and alternating which goes first (keel first in pairs 1,
// 3, …, containerd first in 2, 4, …), the references after each pair.
// For each figure it logs and records a row of the summary: each side's
// median and min–max, and the median of the per-pair ratios
// keel/containerd. It reports; it never checks a target.
func comparePairs(b *testing.B, figs []figure, s sides) {
	ctx := context.Background()
	rounds := benchRounds(b)
	keel := make([][]float64, len(figs))
	ctrd := make([][]float64, len(figs))
	ref := make([][]float64, len(figs))
	ratio := make([][]float64, len(figs))
	measure := func(name string, f side, pair int) []float64 {
		v, err := f(ctx, pair)
		if err != nil {
			b.Fatalf("pair %d, %s: %v", pair+1, name, err)
		}
		if len(v) != len(figs) {
			b.Fatalf("pair %d, %s: %d values for %d figures", pair+1, name, len(v), len(figs))
		}
		return v
	}
	b.ResetTimer()
	for pair := range rounds {
		var k, c []float64
		first := "keel"
		if pair%2 == 0 {
			k = measure("keel", s.keel, pair)
			c = measure("containerd", s.containerd, pair)
		} else {
			first = "containerd"
			c = measure("containerd", s.containerd, pair)
			k = measure("keel", s.keel, pair)
		}
		var r []float64
		if s.ref != nil {
			r = measure("reference", s.ref, pair)
		}
		var line []string
		for i, f := range figs {
			keel[i] = append(keel[i], k[i])
			ctrd[i] = append(ctrd[i], c[i])
			ratio[i] = append(ratio[i], k[i]/c[i])
			l := fmt.Sprintf("%s: keel %s, containerd %s", f.name, num(k[i]), num(c[i]))
			if r != nil && !math.IsNaN(r[i]) {
				ref[i] = append(ref[i], r[i])
				l += fmt.Sprintf(", %s %s", f.ref, num(r[i]))
			}
			line = append(line, l+" "+f.unit)
		}
		b.Logf("pair %d/%d (%s first): %s", pair+1, rounds, first, strings.Join(line, "; "))
	}
	b.StopTimer()
	for i, f := range figs {
		row := summaryRow{figure: f, keel: spreadOf(keel[i]), containerd: spreadOf(ctrd[i]), ratio: medianOf(ratio[i])}
		if len(ref[i]) > 0 {
			row.ref = spreadOf(ref[i])
		}
		b.Logf("%s", row.markdown())
		summary.add(row)
	}
}

// spread is a figure's median and range over the rounds.
type spread struct {
	n                int
	median, min, max float64
}

func spreadOf(xs []float64) spread {
	return spread{n: len(xs), median: medianOf(xs), min: slices.Min(xs), max: slices.Max(xs)}
}

func (s spread) String() string {
	if s.n == 0 {
		return ""
	}
	if s.n == 1 {
		return num(s.median)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.median), num(s.min), num(s.max))
}

// medianOf is the median of xs (the mean of the middle two for an even
// count).
func medianOf[T ~int64 | ~float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// num prints x with three significant digits or more.
func num(x float64) string {
	switch a := math.Abs(x); {
	case a >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// summaryRow is one figure's line in the summary table.
type summaryRow struct {
	figure
	keel, containerd, ref spread
	ratio                 float64
}

const summaryHeader = "| figure | unit | keel median (min–max) | containerd median (min–max) | keel/containerd (median of pairs) | reference median (min–max) |\n|---|---|---|---|---|---|\n"

func (r summaryRow) markdown() string {
	ref := ""
	if r.ref.n > 0 {
		ref = r.figure.ref + ": " + r.ref.String()
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %.2f× | %s |", r.name, r.unit, r.keel, r.containerd, r.ratio, ref)
}

// summary collects the rows of every comparison run; TestMain prints it
// after the benchmarks, in the order.
var summary summaryTable

type summaryTable struct {
	mu   sync.Mutex
	rows []summaryRow
}

func (t *summaryTable) add(r summaryRow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows = append(t.rows, r)
}

// printSummary writes the summary table (markdown) to w, with what was
// compared and how.
func printSummary(w io.Writer) {
	summary.mu.Lock()
	rows := slices.Clone(summary.rows)
	summary.mu.Unlock()
	if len(rows) == 0 {
		return
	}
	slices.SortStableFunc(rows, func(a, b summaryRow) int { return cmp.Compare(a.order, b.order) })
	ver := "containerd not found"
	if out, err := exec.Command("containerd", "--version").Output(); err == nil {
		ver = strings.TrimSpace(string(out))
	}
	fmt.Fprintf(w, "\n## keel vs containerd (%s), %s, %d CPUs, %d pairs per figure\n\n", ver, time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), rows[0].keel.n)
	fmt.Fprint(w, summaryHeader)
	for _, r := range rows {
		fmt.Fprintln(w, r.markdown())
	}
	fmt.Fprintln(w, "\nPairs interleaved (keel and containerd alternate going first); the ratio is the median of the per-pair ratios keel/containerd: below 1 keel is faster or smaller for ms and MB, above 1 it moves more for MB/s and /s.")
}

// writeSummary prints the summary table to stdout and, when
// $KEEL_BENCH_OUT names a file, writes it there too.
func writeSummary() error {
	var buf bytes.Buffer
	printSummary(&buf)
	os.Stdout.Write(buf.Bytes())
	if out := os.Getenv("KEEL_BENCH_OUT"); out != "" && buf.Len() > 0 {
		return os.WriteFile(out, buf.Bytes(), 0o644)
	}
	return nil
}
