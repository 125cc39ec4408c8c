package check

import (
	"context"
	"fmt"
	"strings"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ingests reports the partial ingests of the content plugin that no lease
// holds (with their age), those no record refers to, and records whose
// ingest is gone.
//
// TODO(ingest): once unheld ingests are collected after an age (issue 10,
// item 6), an unheld ingest younger than that age is fine and an older one
// is the collector's: report only what the collector would not take.
func (c *Checker) ingests(ctx context.Context) ([]Problem, error) {
	store, _ := c.DB.Backends()
	if store == nil {
		return nil, nil
	}
	statuses, err := store.ListStatuses(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the content plugin's ingests: %w", err)
	}
	// Read after the plugin: a writer opens its ingest before recording it.
	records, err := c.DB.IngestRecords(c.Now())
	if err != nil {
		return nil, err
	}
	byRef := map[string]metadata.IngestRecord{}
	for _, r := range records {
		byRef[r.BackendRef] = r
	}
	live := map[string]content.Status{}
	var out []Problem
	unsafeOnline := ""
	if !c.Offline {
		unsafeOnline = " (applied by --repair only offline: a writer may be at work)"
	}
	for _, st := range statuses {
		live[st.Ref] = st
		desc := fmt.Sprintf("%d bytes written, last %s", st.Offset, c.age(st.UpdatedAt))
		r, ok := byRef[st.Ref]
		if !ok {
			bref := st.Ref
			out = append(out, Problem{Kind: KindIngest, Object: bref,
				Problem: "partial ingest in the content plugin that no namespace records (" + desc + ")",
				Fix:     "abort it in the plugin" + unsafeOnline,
				Safe:    c.Offline,
				repair:  func(ctx context.Context) error { return notFoundOK(store.Abort(ctx, bref)) },
			})
			continue
		}
		if len(r.Leases) > 0 {
			continue
		}
		out = append(out, Problem{Kind: KindIngest, Object: r.Namespace + "/" + r.Ref,
			Problem: "partial ingest no lease holds (" + desc + ")",
			Fix:     fmt.Sprintf("abort it (keel content ingests abort -n %s %s)%s", r.Namespace, r.Ref, unsafeOnline),
			Safe:    c.Offline,
			repair:  func(ctx context.Context) error { return c.abort(ctx, r) },
		})
	}
	for _, r := range records {
		if _, ok := live[r.BackendRef]; ok {
			continue
		}
		if _, err := store.Status(ctx, r.BackendRef); !errdefs.IsNotFound(err) {
			continue // opened meanwhile
		}
		leased := ""
		if len(r.Leases) > 0 {
			leased = " (held by lease " + strings.Join(r.Leases, ", ") + ")"
		}
		out = append(out, Problem{Kind: KindIngest, Object: r.Namespace + "/" + r.Ref,
			Problem: "recorded but the content plugin has no such ingest" + leased,
			Fix:     "drop the record",
			Safe:    true,
			repair:  func(context.Context) error { return c.DB.DropIngestRecord(r.Namespace, r.Ref) },
		})
	}
	return out, nil
}

// abort aborts the ingest of r through keeld's view: plugin and record.
func (c *Checker) abort(ctx context.Context, r metadata.IngestRecord) error {
	store, _ := c.DB.Backends()
	if err := notFoundOK(store.Abort(ctx, r.BackendRef)); err != nil {
		return err
	}
	return c.DB.DropIngestRecord(r.Namespace, r.Ref)
}

func notFoundOK(err error) error {
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}
