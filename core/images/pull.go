package images

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/hashicorp/go-hclog"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// DefaultMaxConcurrentDownloads bounds the blobs a pull fetches at once
// when the Puller does not say.
const DefaultMaxConcurrentDownloads = 3

// Puller pulls images into one namespace's content store and snapshotter
// (the call's context names the namespace and the lease).
type Puller struct {
	Resolver resolver.Resolver
	Content  content.Store
	// Snapshotter and SnapshotterName receive the layers; nil means no
	// unpack.
	Snapshotter     snapshot.Snapshotter
	SnapshotterName string
	// MountDir is where layers are mounted while they are applied.
	MountDir string
	// MaxConcurrentDownloads bounds the blobs fetched at once (default
	// DefaultMaxConcurrentDownloads).
	MaxConcurrentDownloads int
	// Limits bound what an image may make the pull do (zero fields take
	// their defaults).
	Limits Limits
	Logger hclog.Logger
}

// PullOptions choose what a pull fetches and unpacks.
type PullOptions struct {
	// Platform picks the manifest of an index and the one unpacked; nil is
	// the host's (platforms.Default: arm64 matches arm64/v8 and so on).
	Platform platforms.MatchComparer
	// AllPlatforms fetches every manifest of an index; the best match of
	// Platform is still the one unpacked.
	AllPlatforms bool
	// Unpack applies the layers of the chosen manifest to the snapshotter.
	Unpack bool
	// Progress, when set, is called (one call at a time) as blobs move and
	// layers are unpacked.
	Progress func(Progress)
}

// BlobState is where a blob of a pull or a push is.
type BlobState int

// Blob states, in the order a blob goes through them.
const (
	BlobWaiting     BlobState = iota // pull: queued behind max_concurrent_downloads
	BlobDownloading                  // pull: bytes moving in
	BlobPushing                      // push: bytes moving out
	BlobDone                         // pulled (committed, size and digest checked) or pushed
	BlobExists                       // stored already (pull) or on the registry (push): nothing moved
)

func (s BlobState) String() string {
	return [...]string{"waiting", "downloading", "pushing", "done", "exists"}[s]
}

// Progress is one step of a pull: a blob's (Blob set) or a layer's (Layer
// set).
type Progress struct {
	Blob  *BlobProgress
	Layer *LayerProgress
}

// BlobProgress is a blob's state and bytes.
type BlobProgress struct {
	Desc ocispec.Descriptor
	// Role is "index", "manifest", "config" or "layer".
	Role  string
	State BlobState
	// Offset is the bytes stored so far; ResumedFrom where a partial
	// ingest left by an earlier pull had got to.
	Offset      int64
	ResumedFrom int64
}

// LayerProgress reports a layer unpacked (or found committed, Skipped).
type LayerProgress struct {
	Index   int
	Desc    ocispec.Descriptor
	DiffID  digest.Digest
	ChainID digest.Digest
	Skipped bool
	// Duration is how long the layer took to apply (and, applied as it
	// downloads, to download); Size its uncompressed bytes.
	Duration time.Duration
	Size     int64
}

// PullResult is what a pull stored.
type PullResult struct {
	// Name is the canonical name the resolver gave, Target what it
	// points at.
	Name   string
	Target ocispec.Descriptor
	// Manifests are the manifests fetched.
	Manifests []ocispec.Descriptor
	// Unpacked is the manifest unpacked and ChainID its top snapshot;
	// zero without unpack.
	Unpacked ocispec.Descriptor
	ChainID  digest.Digest
}

// ChainIDs returns the chain id of each layer of diffIDs: the first
// layer's is its diff id, each next one sha256("<parent chain id> <diff
// id>"), so a snapshot is named by everything below it.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	return identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
}

// pull is one Pull in flight.
type pull struct {
	p      *Puller
	ref    string // the canonical name, for the resolver
	opts   PullOptions
	limits Limits

	progressMu sync.Mutex
	sem        chan struct{}

	mu        sync.Mutex
	downloads map[digest.Digest]*download
}

// download is one blob being fetched. Its tee, when the unpacker attached
// one before the download started from offset 0, receives every byte as
// it is stored, so the layer is applied as it arrives.
type download struct {
	desc ocispec.Descriptor
	role string

	mu      sync.Mutex
	started bool
	tee     *io.PipeWriter
	// decided is closed once the download knows whether it feeds the
	// tee (a fresh ingest) or not (stored already, or resumed).
	decided chan struct{}
	teeing  bool

	done chan struct{}
	err  error
}

// Pull resolves ref, fetches the index, manifests, configs and layers the
// options choose (at most MaxConcurrentDownloads blobs at once, each
// resumed from a partial ingest an earlier pull left), and with Unpack
// applies the chosen manifest's layers in order as they download, each
// onto a snapshot named by its chain id. It labels what it stored with
// gc.ref labels (index → manifests, manifest → config and layers, config
// → the top snapshot) and returns the target; the caller writes the
// image record and holds a lease over the call.
//
// Errors: NotFound when the reference or a platform's manifest is absent;
// InvalidArgument for a malformed manifest, a layer of an unknown media
// type or a refused layer entry; NotImplemented for a foreign layer;
// FailedPrecondition for a digest, size or diff id that does not match,
// and for an image over p.Limits (a *LimitError naming the config key:
// counts and declared sizes are checked before any layer is fetched).
// A failed pull leaves no committed snapshot for the layer it failed on;
// one refused for a limit leaves no ingest either.
func (p *Puller) Pull(ctx context.Context, ref string, opts PullOptions) (PullResult, error) {
	if opts.Platform == nil {
		opts.Platform = platforms.Default()
	}
	if opts.Unpack && p.Snapshotter == nil {
		return PullResult{}, fmt.Errorf("pull %s: unpack needs a snapshotter: %w", ref, errdefs.ErrInvalidArgument)
	}
	name, target, err := p.Resolver.Resolve(ctx, ref)
	if err != nil {
		return PullResult{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	n := p.MaxConcurrentDownloads
	if n <= 0 {
		n = DefaultMaxConcurrentDownloads
	}
	pl := &pull{p: p, ref: name, opts: opts, limits: p.Limits.withDefaults(), sem: make(chan struct{}, n), downloads: map[digest.Digest]*download{}}
	res := PullResult{Name: name, Target: target}

	manifests, unpack, err := pl.manifests(ctx, target)
	if err != nil {
		return PullResult{}, err
	}
	g, gctx := errgroup.WithContext(ctx)
	type fetched struct {
		desc     ocispec.Descriptor
		manifest ocispec.Manifest
		config   ocispec.Image
		cfgDesc  ocispec.Descriptor
	}
	all := make([]fetched, len(manifests))
	for i, md := range manifests {
		var m ocispec.Manifest
		if err := pl.readJSON(ctx, md, "manifest", &m); err != nil {
			return PullResult{}, err
		}
		if err := checkManifest(md, m); err != nil {
			return PullResult{}, err
		}
		if err := pl.limits.checkManifest(md, m); err != nil {
			return PullResult{}, fmt.Errorf("pull %s: %w", name, err)
		}
		var cfg ocispec.Image
		if err := pl.readJSON(ctx, m.Config, "config", &cfg); err != nil {
			return PullResult{}, err
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return PullResult{}, fmt.Errorf("manifest %s: %d layers but its config lists %d diff ids: %w", md.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
		}
		if i == unpack && target.Digest == md.Digest && !opts.Platform.Match(cfg.Platform) && !opts.AllPlatforms {
			return PullResult{}, fmt.Errorf("pull %s: the image is for %s, no match for the platform asked: %w", name, platforms.Format(cfg.Platform), errdefs.ErrNotFound)
		}
		all[i] = fetched{desc: md, manifest: m, config: cfg, cfgDesc: m.Config}
		res.Manifests = append(res.Manifests, md)
	}
	// Queue every layer (the unpacked manifest's first, in order, so its
	// downloads lead), then let at most n run at once.
	var queue []*download
	add := func(l ocispec.Descriptor) {
		if d := pl.download(l, "layer"); d != nil {
			queue = append(queue, d)
		}
	}
	if unpack >= 0 {
		for _, l := range all[unpack].manifest.Layers {
			add(l)
		}
	}
	for _, f := range all {
		for _, l := range f.manifest.Layers {
			add(l)
		}
	}
	for _, d := range queue {
		pl.progress(Progress{Blob: &BlobProgress{Desc: d.desc, Role: d.role, State: BlobWaiting}})
	}
	g.Go(func() error {
		for _, d := range queue {
			select {
			case pl.sem <- struct{}{}:
			case <-gctx.Done():
				// Never to start: whoever waits on it learns why.
				d.finish(gctx.Err())
				continue
			}
			g.Go(func() error {
				defer func() { <-pl.sem }()
				return pl.fetch(gctx, d)
			})
		}
		return nil
	})
	if opts.Unpack && unpack >= 0 {
		f := all[unpack]
		g.Go(func() error {
			chain, err := pl.unpack(gctx, f.manifest.Layers, f.config.RootFS.DiffIDs)
			res.Unpacked, res.ChainID = f.desc, chain
			return err
		})
	}
	if err := g.Wait(); err != nil {
		if IsLimit(err) {
			pl.abortIngests(ctx)
		}
		return PullResult{}, err
	}

	// Label the graph, so the image record keeps all of it.
	for _, f := range all {
		children := append([]ocispec.Descriptor{f.cfgDesc}, f.manifest.Layers...)
		if err := pl.label(ctx, f.desc.Digest, ChildLabels(f.desc, children)); err != nil {
			return PullResult{}, err
		}
	}
	if res.ChainID != "" {
		if err := pl.label(ctx, all[unpack].cfgDesc.Digest, map[string]string{gc.LabelRefSnapshotPrefix + p.SnapshotterName: res.ChainID.String()}); err != nil {
			return PullResult{}, err
		}
	}
	if IsIndex(target.MediaType) {
		labels := map[string]string{}
		for i, md := range manifests {
			labels[gc.LabelRefContent+".m."+strconv.Itoa(i)] = md.Digest.String()
		}
		if err := pl.label(ctx, target.Digest, labels); err != nil {
			return PullResult{}, err
		}
	}
	return res, nil
}

// checkManifest refuses a manifest whose content says another media type
// than its descriptor.
func checkManifest(desc ocispec.Descriptor, m ocispec.Manifest) error {
	if m.MediaType != "" && m.MediaType != desc.MediaType {
		return fmt.Errorf("manifest %s: media type %q, its descriptor says %q: %w", desc.Digest, m.MediaType, desc.MediaType, errdefs.ErrInvalidArgument)
	}
	if m.Config.Digest == "" {
		return fmt.Errorf("manifest %s: no config: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	return nil
}

// manifests fetches target (an index or a manifest) and returns the
// manifests to fetch and which of them to unpack (-1: none matches).
func (pl *pull) manifests(ctx context.Context, target ocispec.Descriptor) ([]ocispec.Descriptor, int, error) {
	switch {
	case IsManifest(target.MediaType):
		if _, err := pl.readBlob(ctx, target, "manifest"); err != nil {
			return nil, 0, err
		}
		return []ocispec.Descriptor{target}, 0, nil
	case IsIndex(target.MediaType):
	default:
		return nil, 0, fmt.Errorf("pull %s: %s has media type %q, neither an index nor a manifest: %w", pl.ref, target.Digest, target.MediaType, errdefs.ErrNotImplemented)
	}
	var idx ocispec.Index
	if err := pl.readJSON(ctx, target, "index", &idx); err != nil {
		return nil, 0, err
	}
	if err := pl.limits.checkIndex(target, idx); err != nil {
		return nil, 0, fmt.Errorf("pull %s: %w", pl.ref, err)
	}
	out, best, err := SelectManifests(idx, pl.opts.Platform, pl.opts.AllPlatforms)
	if err != nil {
		return nil, 0, fmt.Errorf("pull %s: %w", pl.ref, err)
	}
	return out, best, nil
}

// SelectManifests picks the manifests of idx a pull fetches: the best
// match of platform (or, with all, every manifest), and which of them is
// unpacked (-1 when none matches, with all). A manifest without a platform
// matches any. Nested indexes are skipped. NotFound when nothing matches.
func SelectManifests(idx ocispec.Index, platform platforms.MatchComparer, all bool) ([]ocispec.Descriptor, int, error) {
	var out []ocispec.Descriptor
	best := -1
	for _, m := range idx.Manifests {
		if !IsManifest(m.MediaType) {
			continue
		}
		match := m.Platform == nil || platform.Match(*m.Platform)
		if !match && !all {
			continue
		}
		out = append(out, m)
		if match && (best < 0 || (m.Platform != nil && out[best].Platform != nil && platform.Less(*m.Platform, *out[best].Platform))) {
			best = len(out) - 1
		}
	}
	if best < 0 && !all {
		var have []string
		for _, m := range idx.Manifests {
			if m.Platform != nil {
				have = append(have, platforms.Format(*m.Platform))
			}
		}
		return nil, 0, fmt.Errorf("no manifest for the platform asked (the index has %v): %w", have, errdefs.ErrNotFound)
	}
	if !all {
		out, best = out[best:best+1], 0
	}
	return out, best, nil
}

// readJSON fetches desc (small) and decodes it into v.
func (pl *pull) readJSON(ctx context.Context, desc ocispec.Descriptor, role string, v any) error {
	b, err := pl.readBlob(ctx, desc, role)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s: %v: %w", role, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// readBlob fetches a small blob into the store and reads it back.
func (pl *pull) readBlob(ctx context.Context, desc ocispec.Descriptor, role string) ([]byte, error) {
	if err := pl.limits.checkBlobSize(desc, role, "max_manifest_size", pl.limits.MaxManifestSize); err != nil {
		return nil, err
	}
	d := pl.download(desc, role)
	if d == nil {
		pl.mu.Lock()
		d = pl.downloads[desc.Digest]
		pl.mu.Unlock()
		<-d.done
	} else if err := pl.fetch(ctx, d); err != nil {
		return nil, err
	}
	if d.err != nil {
		return nil, d.err
	}
	b, err := ReadBlob(ctx, pl.p.Content, desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	return b, nil
}

// download registers desc's download, or returns nil when it is
// registered already (a layer two manifests share).
func (pl *pull) download(desc ocispec.Descriptor, role string) *download {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if _, ok := pl.downloads[desc.Digest]; ok {
		return nil
	}
	d := &download{desc: desc, role: role, decided: make(chan struct{}), done: make(chan struct{})}
	pl.downloads[desc.Digest] = d
	return d
}

func (d *download) decide(tee bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.decided:
		return
	default:
	}
	d.started = true
	d.teeing = tee && d.tee != nil
	if !d.teeing && d.tee != nil {
		d.tee.Close()
	}
	close(d.decided)
}

func (d *download) finish(err error) {
	d.decide(false)
	d.err = err
	if d.tee != nil {
		if err != nil {
			d.tee.CloseWithError(err)
		} else {
			d.tee.Close()
		}
	}
	close(d.done)
}

func (pl *pull) progress(p Progress) {
	if pl.opts.Progress == nil {
		return
	}
	pl.progressMu.Lock()
	defer pl.progressMu.Unlock()
	pl.opts.Progress(p)
}

// fetch moves d's blob into the content store, feeding its tee when one
// is attached and the ingest starts at 0.
func (pl *pull) fetch(ctx context.Context, d *download) (err error) {
	defer func() { d.finish(err) }()
	desc := d.desc
	bp := BlobProgress{Desc: desc, Role: d.role}
	err = fetch(ctx, pl.p.Resolver, pl.p.Content, pl.ref, desc, fetchHooks{
		exists: func() {
			d.decide(false)
			bp.State, bp.Offset = BlobExists, desc.Size
			pl.progress(Progress{Blob: &bp})
		},
		start: func(offset int64) io.Writer {
			d.decide(offset == 0)
			bp.State, bp.Offset, bp.ResumedFrom = BlobDownloading, offset, offset
			pl.progress(Progress{Blob: &bp})
			if d.teeing {
				return d.tee
			}
			return nil
		},
		wrote: func(offset int64) {
			bp.Offset = offset
			pl.progress(Progress{Blob: &bp})
		},
	})
	if err != nil {
		return err
	}
	if bp.State != BlobExists {
		bp.State, bp.Offset = BlobDone, desc.Size
		pl.progress(Progress{Blob: &bp})
	}
	return nil
}

// abortIngests drops what the pull's downloads left partial: an image
// refused for a limit is refused again, so its bytes are not kept to be
// resumed.
func (pl *pull) abortIngests(ctx context.Context) {
	pl.mu.Lock()
	refs := make([]string, 0, len(pl.downloads))
	for _, d := range pl.downloads {
		refs = append(refs, IngestRef(d.desc))
	}
	pl.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for _, ref := range refs {
		// A writer cancelled mid-chunk lets go of its ingest when the
		// content plugin sees the cancel, a moment after ours returned.
		var err error
		for deadline := time.Now().Add(abortWait); ; time.Sleep(20 * time.Millisecond) {
			err = pl.p.Content.Abort(ctx, ref)
			if !errdefs.IsUnavailable(err) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil && !errdefs.IsNotFound(err) && pl.p.Logger != nil {
			pl.p.Logger.Warn("dropping a refused image's ingest", "ref", ref, "error", err)
		}
	}
}

// abortWait bounds how long abortIngests waits for a writer to let go.
const abortWait = 10 * time.Second

// label sets labels on a stored blob.
func (pl *pull) label(ctx context.Context, dgst digest.Digest, labels map[string]string) error {
	info := content.Info{Digest: dgst, Labels: labels}
	var paths []string
	for k := range labels {
		paths = append(paths, "labels."+k)
	}
	if _, err := pl.p.Content.Update(ctx, info, paths...); err != nil {
		return fmt.Errorf("label %s: %w", dgst, err)
	}
	return nil
}

// unpack applies layers in order, each onto a snapshot named by its chain
// id, skipping the chains committed already, and returns the top chain id.
func (pl *pull) unpack(ctx context.Context, layers []ocispec.Descriptor, diffIDs []digest.Digest) (digest.Digest, error) {
	chains := ChainIDs(diffIDs)
	sn := pl.p.Snapshotter
	var used int64 // uncompressed bytes applied
	for i, l := range layers {
		chain := chains[i].String()
		lp := LayerProgress{Index: i, Desc: l, DiffID: diffIDs[i], ChainID: chains[i]}
		if info, err := sn.Stat(ctx, chain); err == nil && info.Kind == snapshot.KindCommitted {
			lp.Skipped = true
			pl.progress(Progress{Layer: &lp})
			continue
		} else if err != nil && !errdefs.IsNotFound(err) {
			return "", fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		parent := ""
		if i > 0 {
			parent = chains[i-1].String()
		}
		budget, key := pl.limits.unpackBudget(l, used)
		start := time.Now()
		size, err := pl.applyLayer(ctx, l, diffIDs[i], chain, parent, budget, key)
		if err != nil {
			return "", fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		used += size
		lp.Duration, lp.Size = time.Since(start), size
		pl.progress(Progress{Layer: &lp})
	}
	return chains[len(chains)-1], nil
}

// applyLayer prepares a snapshot on parent, applies layer l onto its
// mount — from the download as it arrives when the download has not
// started yet, else from the content store once stored — checks the diff
// id, and commits the snapshot as chain once the blob itself is
// committed (its digest checked). It returns the layer's uncompressed
// size, which may not exceed budget (a LimitError naming key). On failure
// the snapshot is removed.
func (pl *pull) applyLayer(ctx context.Context, l ocispec.Descriptor, diffID digest.Digest, chain, parent string, budget int64, limitKey string) (size int64, err error) {
	pl.mu.Lock()
	d := pl.downloads[l.Digest]
	pl.mu.Unlock()
	var pr *io.PipeReader
	d.mu.Lock()
	if !d.started {
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		d.tee = pw
	}
	d.mu.Unlock()
	if pr != nil {
		defer pr.Close()
	}

	sn := pl.p.Snapshotter
	var rnd [6]byte
	rand.Read(rnd[:])
	key := "extract-" + hex.EncodeToString(rnd[:]) + " " + chain
	mounts, err := sn.Prepare(ctx, key, parent)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			if rerr := sn.Remove(context.WithoutCancel(ctx), key); rerr != nil && pl.p.Logger != nil {
				pl.p.Logger.Warn("removing a failed layer's snapshot", "key", key, "error", rerr)
			}
		}
	}()
	if err := os.MkdirAll(pl.p.MountDir, 0o700); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp(pl.p.MountDir, "layer-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return 0, err
	}
	defer func() {
		// Unmounted already on success; a second unmount is a no-op.
		if uerr := mount.Unmount(dir); uerr != nil && err == nil {
			err = uerr
		}
	}()

	var src io.Reader
	select {
	case <-d.decided:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if d.teeing {
		src = pr
	} else {
		select {
		case <-d.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if d.err != nil {
			return 0, d.err
		}
		ra, err := pl.p.Content.ReaderAt(ctx, l)
		if err != nil {
			return 0, err
		}
		defer ra.Close()
		src = io.NewSectionReader(ra, 0, ra.Size())
	}
	// The compression is detected from the stream: media types in the
	// wild are not always what the bytes are, and the diff id is checked.
	res, err := diff.Apply(ctx, dir, src, diff.WithExpectedDiffID(diffID), diff.WithMaxSize(budget))
	if err != nil {
		err = asUnpackLimit(err, l, budget, limitKey, pl.limits)
		if pr != nil {
			pr.CloseWithError(err)
			if errdefs.IsDataLoss(err) {
				// Bytes that do not decode may not be the blob's at all:
				// the download goes on to its commit, which tells.
				select {
				case <-d.done:
					if errdefs.IsFailedPrecondition(d.err) {
						return 0, d.err
					}
				case <-ctx.Done():
				}
			}
		}
		return 0, err
	}
	if pr != nil {
		// What follows the compressed stream (a gzip trailer, padding)
		// still belongs to the blob.
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return 0, err
		}
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if d.err != nil {
		return 0, d.err
	}
	if err := mount.Unmount(dir); err != nil {
		return 0, err
	}
	return res.Size, commitLayer(ctx, sn, chain, key)
}

// commitLayer commits the snapshot key as chain. When another pull
// commits the same chain at once, its commit wins: this one waits until
// that one is visible (the next layer needs it as a parent), then drops
// its own copy; should the other commit fail instead, this one takes its
// place.
func commitLayer(ctx context.Context, sn snapshot.Snapshotter, chain, key string) error {
	delay := 10 * time.Millisecond
	for {
		err := sn.Commit(ctx, chain, key)
		if !errdefs.IsAlreadyExists(err) {
			return err
		}
		if info, err := sn.Stat(ctx, chain); err == nil && info.Kind == snapshot.KindCommitted {
			return sn.Remove(ctx, key)
		} else if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		// Being committed by the other pull: not visible yet.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("commit %s: waiting for another pull's commit: %w", chain, ctx.Err())
		}
		delay = min(2*delay, time.Second)
	}
}
