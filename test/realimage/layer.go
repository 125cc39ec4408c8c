package realimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/test/fstree"
)

// Layer is one built layer: a gzip-compressed tar in the cache.
type Layer struct {
	// Path is the .tar.gz file.
	Path string `json:"path"`
	// Digest and Size are the compressed blob's.
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// DiffID is the digest of the uncompressed tar.
	DiffID digest.Digest `json:"diffID"`
}

// MediaType is the layers' OCI media type.
const MediaType = ocispec.MediaTypeImageLayerGzip

// Open returns the layer's uncompressed tar stream.
func (l Layer) Open() (io.ReadCloser, error) {
	f, err := os.Open(l.Path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", l.Path, err)
	}
	return &gzipFile{Reader: zr, f: f}, nil
}

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g *gzipFile) Close() error {
	g.Reader.Close()
	return g.f.Close()
}

// Whiteout names of the OCI image layer spec.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// writeLayer tars the tree at root into path as a gzip-compressed layer.
// With upper set, root is an overlayfs upper dir and is converted the way
// a build tool turns one into a layer: a 0:0 character device (overlayfs's
// whiteout) becomes an empty file .wh.<name>, and a directory marked
// opaque (trusted.overlay.opaque=y) gets a .wh..wh..opq file right after
// it; overlayfs's own xattrs are left out.
func writeLayer(root, path string, upper bool) (Layer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Layer{}, err
	}
	defer f.Close()
	blobHash, tarHash := sha256.New(), sha256.New()
	counter := &countWriter{}
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, blobHash, counter), gzip.DefaultCompression)
	if err != nil {
		return Layer{}, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, tarHash))
	if err := writeTree(tw, root, upper); err != nil {
		return Layer{}, err
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return Layer{}, err
	}
	if err := f.Sync(); err != nil {
		return Layer{}, err
	}
	return Layer{
		Path:   path,
		Digest: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(blobHash.Sum(nil))),
		Size:   counter.n,
		DiffID: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(tarHash.Sum(nil))),
	}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// writeTree writes root's entries (not root itself) to tw in lexical
// order, hardlinked files as links to the first name seen.
func writeTree(tw *tar.Writer, root string, upper bool) error {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		hdr, err := header(path, rel, fi, st)
		if err != nil {
			return err
		}
		if upper && hdr.Typeflag == tar.TypeChar && st.Rdev == 0 {
			// An overlayfs whiteout: the name is deleted in this layer.
			hdr = &tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(filepath.Dir(rel), whiteoutPrefix+filepath.Base(rel)),
				Mode: 0o600, ModTime: hdr.ModTime, Format: tar.FormatPAX}
			return tw.WriteHeader(hdr)
		}
		if hdr.Typeflag == tar.TypeReg && st.Nlink > 1 {
			key := inode{st.Dev, st.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			seen[key] = hdr.Name
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			return copyFile(tw, path, hdr.Size)
		}
		if upper && hdr.Typeflag == tar.TypeDir {
			v, err := fstree.Xattr(path, opaqueXattr)
			if err == nil && string(v) == "y" {
				// The directory hides everything below it in lower layers.
				return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(rel, whiteoutOpaque),
					Mode: 0o600, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime, Format: tar.FormatPAX})
			}
		}
		return nil
	})
}

// header is the tar header of path: owner by number only, xattrs as PAX
// records, overlayfs's own xattrs left out.
func header(path, rel string, fi fs.FileInfo, st *syscall.Stat_t) (*tar.Header, error) {
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(path); err != nil {
			return nil, err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	hdr.Name = rel
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Format = tar.FormatPAX
	xattrs, err := fstree.Xattrs(path)
	if err != nil {
		return nil, err
	}
	for k, v := range xattrs {
		if strings.HasPrefix(k, "trusted.overlay.") {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = string(v)
	}
	return hdr, nil
}

func copyFile(w io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err == nil && n != size {
		err = fmt.Errorf("%s changed size while being archived", path)
	}
	return err
}
