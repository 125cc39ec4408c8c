package cri

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/hashicorp/go-hclog"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// imageService serves the CRI ImageService from keeld's image records in
// the CRI's namespace. A CRI image is every keel image record whose
// manifest names one config: its id is the config's digest, its
// repo_tags the records' names, its repo_digests each name's repository
// at the manifest's digest.
type imageService struct {
	runtimeapi.UnimplementedImageServiceServer
	c      *client.Client
	logger hclog.Logger
	// pinned is the sandbox image's normalized name: pinned, as
	// containerd pins it, so the kubelet's image GC keeps it.
	pinned string

	// facts caches what an image's content says, by its target's digest:
	// content is addressed by digest, so nothing in it can drift from
	// keeld's.
	mu    sync.Mutex
	facts map[digest.Digest]imageFacts
}

// imageFacts is what the CRI reports of an image's content.
type imageFacts struct {
	id       digest.Digest // the config's digest
	manifest digest.Digest // the platform's manifest
	size     uint64        // manifest, config and layers, as stored
	user     string        // the config's User
}

// criImage is the keel image records of one CRI image.
type criImage struct {
	facts   imageFacts
	records []client.Image
}

// NormalizeRef is ref as the kubelet and containerd name images: the
// registry and library/ filled in, :latest when neither tag nor digest is
// given (docker.io/library/busybox:latest). InvalidArgument for a
// malformed one.
func NormalizeRef(ref string) (reference.Named, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named, nil
}

func (is *imageService) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	named, err := NormalizeRef(req.GetImage().GetImage())
	if err != nil {
		return nil, err
	}
	creds, err := pullCredentials(req.GetAuth())
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", named, err)
	}
	start := time.Now()
	img, err := is.c.Pull(ctx, named.String(), client.WithPullUnpack, client.WithPullCredentials(creds))
	if err != nil {
		return nil, err
	}
	f, err := is.factsOf(ctx, img)
	if err != nil {
		return nil, err
	}
	is.logger.Info("pulled", "ref", named.String(), "id", f.id, "duration", time.Since(start).Round(time.Millisecond).String())
	return &runtimeapi.PullImageResponse{ImageRef: f.id.String()}, nil
}

// pullCredentials is the CRI's AuthConfig as keel's resolver takes it:
// username and password, or auth (base64 of "user:password"), or an
// identity token (an OAuth2 refresh token). A registry token (a bearer
// token to send as it is) is not supported.
func pullCredentials(a *runtimeapi.AuthConfig) (resolver.Credentials, error) {
	if a == nil {
		return resolver.Credentials{}, nil
	}
	if a.RegistryToken != "" {
		return resolver.Credentials{}, fmt.Errorf("auth with a registry_token is not supported: give username and password, auth or identity_token: %w", errdefs.ErrNotImplemented)
	}
	c := resolver.Credentials{Username: a.Username, Secret: a.Password, IdentityToken: a.IdentityToken}
	if a.Auth != "" {
		b, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return c, fmt.Errorf("auth is not base64: %w", errdefs.ErrInvalidArgument)
		}
		user, pass, ok := strings.Cut(string(b), ":")
		if !ok {
			return c, fmt.Errorf("auth is not the base64 of user:password: %w", errdefs.ErrInvalidArgument)
		}
		c.Username, c.Secret = user, pass
	}
	return c, nil
}

func (is *imageService) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	var images []criImage
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, ok, err := is.find(ctx, ref)
		if err != nil || !ok {
			return &runtimeapi.ListImagesResponse{}, err
		}
		images = []criImage{img}
	} else {
		var err error
		if images, err = is.images(ctx); err != nil {
			return nil, err
		}
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range images {
		resp.Images = append(resp.Images, is.toCRI(img))
	}
	return resp, nil
}

// ImageStatus returns the image ref names (by name, by repo@digest or by
// id), nil when there is none.
func (is *imageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	img, ok, err := is.find(ctx, req.GetImage().GetImage())
	if err != nil || !ok {
		return &runtimeapi.ImageStatusResponse{}, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: is.toCRI(img)}
	if req.Verbose {
		info, err := is.verboseInfo(ctx, img)
		if err != nil {
			return nil, err
		}
		resp.Info = info
	}
	return resp, nil
}

// verboseInfo is the image's config and records as JSON, under "info".
func (is *imageService) verboseInfo(ctx context.Context, img criImage) (map[string]string, error) {
	cfg, err := is.c.LocalImage(img.records[0]).Config(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(img.records))
	for i, r := range img.records {
		names[i] = r.Name
	}
	b, err := json.Marshal(struct {
		Names     []string      `json:"names"`
		Manifest  digest.Digest `json:"manifest"`
		ImageSpec ocispec.Image `json:"imageSpec"`
	}{names, img.facts.manifest, cfg})
	if err != nil {
		return nil, err
	}
	return map[string]string{"info": string(b)}, nil
}

// RemoveImage removes every record of the image ref names, as
// containerd's CRI does; an image already gone is no error.
func (is *imageService) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	img, ok, err := is.find(ctx, req.GetImage().GetImage())
	if err != nil || !ok {
		return &runtimeapi.RemoveImageResponse{}, err
	}
	for _, r := range img.records {
		if err := is.c.DeleteImage(ctx, r.Name); err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
	}
	is.logger.Info("removed", "id", img.facts.id, "records", len(img.records))
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the default snapshotter's and the content store's
// use by the CRI's namespace: bytes and inodes of its snapshots, bytes
// and blobs of its content, each at the plugin's directory under keeld's
// root. The snapshotter comes first: the kubelet's image filesystem.
func (is *imageService) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	info, err := is.c.Info(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	var snUsed, snInodes uint64
	sn := is.c.SnapshotService("")
	err = sn.Walk(ctx, func(ctx context.Context, si snapshot.Info) error {
		u, err := sn.Usage(ctx, si.Name)
		if errdefs.IsNotFound(err) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		snUsed += uint64(max(u.Size, 0))
		snInodes += uint64(max(u.Inodes, 0))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	var ctUsed, ctBlobs uint64
	err = is.c.ContentStore().Walk(ctx, func(ci content.Info) error {
		ctUsed += uint64(max(ci.Size, 0))
		ctBlobs++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	contentDir := ""
	for _, p := range info.Plugins {
		if p.Kind == "content" {
			contentDir = pluginDir(info.Root, p.Kind, p.Name)
		}
	}
	usage := func(dir string, used, inodes uint64) *runtimeapi.FilesystemUsage {
		return &runtimeapi.FilesystemUsage{
			Timestamp:  now,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: dir},
			UsedBytes:  &runtimeapi.UInt64Value{Value: used},
			InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		}
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{
		usage(pluginDir(info.Root, "snapshotter", info.DefaultSnapshotter), snUsed, snInodes),
		usage(contentDir, ctUsed, ctBlobs),
	}}, nil
}

// pluginDir is a plugin's directory under keeld's root (as keeld
// assigns it: <root>/plugins/<kind>.<name>).
func pluginDir(root, kind, name string) string {
	return filepath.Join(root, "plugins", kind+"."+name)
}

// images reads every image record of the namespace and groups them by
// config, sorted by id. Records whose content cannot be read (a pull
// under way elsewhere, content removed by hand) are left out and logged.
func (is *imageService) images(ctx context.Context) ([]criImage, error) {
	records, err := is.c.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[digest.Digest]*criImage{}
	for _, r := range records {
		f, err := is.factsOf(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			is.logger.Warn("image left out: its content cannot be read", "image", r.Name, "error", err)
			continue
		}
		img := byID[f.id]
		if img == nil {
			img = &criImage{facts: f}
			byID[f.id] = img
		}
		img.records = append(img.records, r)
	}
	out := make([]criImage, 0, len(byID))
	for _, img := range byID {
		slices.SortFunc(img.records, func(a, b client.Image) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, *img)
	}
	slices.SortFunc(out, func(a, b criImage) int { return strings.Compare(a.facts.id.String(), b.facts.id.String()) })
	return out, nil
}

// factsOf reads (once per target) what img's content says.
func (is *imageService) factsOf(ctx context.Context, img client.Image) (imageFacts, error) {
	is.mu.Lock()
	f, ok := is.facts[img.Target.Digest]
	is.mu.Unlock()
	if ok {
		return f, nil
	}
	li := is.c.LocalImage(img)
	m, err := li.Manifest(ctx)
	if err != nil {
		return imageFacts{}, err
	}
	cfg, err := li.Config(ctx)
	if err != nil {
		return imageFacts{}, err
	}
	f = imageFacts{id: m.Config.Digest, user: cfg.Config.User, size: uint64(m.Config.Size)}
	if img.Target.MediaType == ocispec.MediaTypeImageManifest || img.Target.MediaType == "application/vnd.docker.distribution.manifest.v2+json" {
		f.manifest = img.Target.Digest
		f.size += uint64(img.Target.Size)
	}
	for _, l := range m.Layers {
		f.size += uint64(max(l.Size, 0))
	}
	is.mu.Lock()
	if is.facts == nil {
		is.facts = map[digest.Digest]imageFacts{}
	}
	is.facts[img.Target.Digest] = f
	is.mu.Unlock()
	return f, nil
}

// find returns the image ref names (findImage), ok false for none.
func (is *imageService) find(ctx context.Context, ref string) (criImage, bool, error) {
	images, err := is.images(ctx)
	if err != nil {
		return criImage{}, false, err
	}
	i, err := findImage(images, ref)
	if err != nil || i < 0 {
		return criImage{}, false, err
	}
	return images[i], true, nil
}

// findImage is the index of the image ref names in images, -1 for none:
// ref is an id (sha256:<hex>, or its hex alone), a name (normalized:
// busybox is docker.io/library/busybox:latest), or repo@digest of an
// image record's target.
func findImage(images []criImage, ref string) (int, error) {
	if ref == "" {
		return -1, fmt.Errorf("no image named: %w", errdefs.ErrInvalidArgument)
	}
	id := ref
	if !strings.Contains(id, ":") {
		id = "sha256:" + id
	}
	if d, err := digest.Parse(id); err == nil {
		if i := slices.IndexFunc(images, func(img criImage) bool { return img.facts.id == d }); i >= 0 {
			return i, nil
		}
	}
	named, err := NormalizeRef(ref)
	if err != nil {
		if _, derr := digest.Parse(id); derr == nil {
			return -1, nil // an id (sha256:<hex> or its hex alone) of no image
		}
		return -1, err
	}
	canonical, byDigest := named.(reference.Canonical)
	return slices.IndexFunc(images, func(img criImage) bool {
		for _, r := range img.records {
			if r.Name == named.String() {
				return true
			}
			if byDigest && r.Target.Digest == canonical.Digest() && repoOf(r.Name) == named.Name() {
				return true
			}
		}
		return false
	}), nil
}

// repoOf is the repository of an image record's name ("" for a name
// that is not a reference).
func repoOf(name string) string {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return ""
	}
	return named.Name()
}

// toCRI is img as the kubelet sees it, pinned when it is the sandbox
// image.
func (is *imageService) toCRI(img criImage) *runtimeapi.Image {
	out := img.toCRI()
	out.Pinned = is.pinned != "" && slices.Contains(out.RepoTags, is.pinned)
	return out
}

// toCRI is img as the kubelet sees it.
func (img criImage) toCRI() *runtimeapi.Image {
	out := &runtimeapi.Image{Id: img.facts.id.String(), Size: img.facts.size, Spec: &runtimeapi.ImageSpec{Image: img.facts.id.String()}}
	for _, r := range img.records {
		named, err := reference.ParseNormalizedNamed(r.Name)
		if err != nil {
			continue
		}
		if _, ok := named.(reference.Tagged); ok {
			out.RepoTags = append(out.RepoTags, named.String())
		}
		d := reference.TrimNamed(named).String() + "@" + r.Target.Digest.String()
		if !slices.Contains(out.RepoDigests, d) {
			out.RepoDigests = append(out.RepoDigests, d)
		}
	}
	slices.Sort(out.RepoDigests)
	out.Uid, out.Username = imageUser(img.facts.user)
	return out
}

// imageUser splits a config's User ("name", "uid", "uid:gid",
// "name:group") into the uid the CRI reports when numeric, else the user
// name.
func imageUser(user string) (*runtimeapi.Int64Value, string) {
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return nil, ""
	}
	if n, err := strconv.ParseInt(u, 10, 64); err == nil {
		return &runtimeapi.Int64Value{Value: n}, ""
	}
	return nil, u
}
