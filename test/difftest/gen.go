package difftest

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
)

// Source gives Generate its choices: a *rand.Rand (math/rand/v2) for
// seeded runs, Bytes for a fuzzer.
type Source interface {
	// IntN returns a choice in [0, n).
	IntN(n int) int
}

// Bytes is a Source taking each choice from the next byte (two for n over
// 256) of its input, and 0 once the input is used up, so a fuzzer's
// mutation changes one choice and a short input makes a small stack.
type Bytes []byte

// IntN implements Source.
func (b *Bytes) IntN(n int) int {
	if n <= 1 || len(*b) == 0 {
		return 0
	}
	v := int((*b)[0])
	*b = (*b)[1:]
	if n > 256 && len(*b) > 0 {
		v = v<<8 | int((*b)[0])
		*b = (*b)[1:]
	}
	return v % n
}

// Entry is one tar entry of a generated layer.
type Entry struct {
	Name         string
	Type         byte
	Mode         int64
	UID, GID     int
	Body         string // regular files
	Link         string // symlinks and hardlinks
	Major, Minor int64
	Xattrs       map[string]string
	ModTime      time.Time
}

func (e Entry) String() string {
	switch e.Type {
	case tar.TypeDir:
		return fmt.Sprintf("%s dir %04o %d:%d%s", e.Name, e.Mode, e.UID, e.GID, xattrList(e.Xattrs))
	case tar.TypeReg:
		if strings.HasPrefix(path.Base(e.Name), ".wh.") {
			return e.Name
		}
		return fmt.Sprintf("%s file %04o %d:%d %d bytes%s", e.Name, e.Mode, e.UID, e.GID, len(e.Body), xattrList(e.Xattrs))
	case tar.TypeSymlink:
		return fmt.Sprintf("%s -> %s %d:%d%s", e.Name, e.Link, e.UID, e.GID, xattrList(e.Xattrs))
	case tar.TypeLink:
		return fmt.Sprintf("%s hardlink to %s", e.Name, e.Link)
	}
	return fmt.Sprintf("%s type %c %04o %d:%d %d:%d", e.Name, e.Type, e.Mode, e.UID, e.GID, e.Major, e.Minor)
}

func xattrList(x map[string]string) string {
	if len(x) == 0 {
		return ""
	}
	return " xattrs " + strings.Join(slices.Sorted(maps.Keys(x)), ",")
}

// Stack is a layer stack, lowest layer first.
type Stack [][]Entry

// String lists the stack's entries, a layer a block.
func (s Stack) String() string {
	var b strings.Builder
	for i, l := range s {
		fmt.Fprintf(&b, "layer %d:\n", i)
		for _, e := range l {
			fmt.Fprintf(&b, "\t%s\n", e)
		}
	}
	return b.String()
}

// Tars returns each layer as a plain tar (PAX).
func (s Stack) Tars() ([][]byte, error) {
	var out [][]byte
	for _, l := range s {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range l {
			h := &tar.Header{
				Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Link,
				Uid: e.UID, Gid: e.GID, Devmajor: e.Major, Devminor: e.Minor,
				ModTime: e.ModTime, Format: tar.FormatPAX,
			}
			if e.Type == tar.TypeReg {
				h.Size = int64(len(e.Body))
			}
			for k, v := range e.Xattrs {
				if h.PAXRecords == nil {
					h.PAXRecords = map[string]string{}
				}
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
			if err := tw.WriteHeader(h); err != nil {
				return nil, fmt.Errorf("tar header %s: %w", e.Name, err)
			}
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		out = append(out, buf.Bytes())
	}
	return out, nil
}

// Generate makes a random layer stack the way image builders make them: a
// first layer of dirs, files, symlinks, hardlinks, devices and fifos, then
// layers that add, change (mode, owner, xattrs, contents), replace (a dir
// by a file and back, a file by a symlink...), rename (a whiteout plus an
// entry), delete (whiteouts of files and of nested dirs) and recreate dirs
// (opaque markers), and hardlink to files of lower layers. Most layers list
// every changed entry's parent dirs, as a builder's diff does; some leave
// them implicit. No entry lies below a symlink (keel refuses those that
// lead out, see core/diff), and no layer names a path twice.
func Generate(src Source, opts GenOptions) Stack {
	g := &gen{src: src, opts: opts, model: map[string]*node{"": {Entry: Entry{Type: tar.TypeDir}}}}
	layers := 1 + src.IntN(5)
	var s Stack
	for i := range layers {
		g.emitted = map[string]string{}
		g.files = map[string]bool{}
		g.ents = nil
		g.parents = i == 0 || src.IntN(4) != 0
		ops := 1 + src.IntN(24)
		if i == 0 {
			ops += 8
		}
		for range ops {
			g.op(i == 0)
		}
		s = append(s, g.ents)
	}
	return s
}

// GenOptions tunes Generate.
type GenOptions struct {
	// SameLayerHardlinks links only to files of the hardlink's own layer,
	// as builders' layers do (they copy the target up with the link). On
	// overlayfs a link to a lower layer's file copies up that one name, so
	// the file's other names keep the old inode (see
	// TestKnownOverlayDifferences).
	SameLayerHardlinks bool
}

// node is the model's view of a path: the entry that made it.
type node struct{ Entry }

type gen struct {
	src   Source
	opts  GenOptions
	model map[string]*node // the tree after the entries so far; "" is the root
	files map[string]bool  // regular files this layer wrote
	// emitted says what this layer did to a path: "dir" (a dir entry),
	// "node" (any other entry), "gone" (a whiteout)
	emitted map[string]string
	ents    []Entry
	parents bool // list parents' dir entries, as builders do
}

var names = []string{"a", "b", "c", "d", "e", "etc", "usr", "share", "info", "lib"}

func (g *gen) pick(list []string) string { return list[g.src.IntN(len(list))] }

func (g *gen) chance(n int) bool { return g.src.IntN(n) == 0 }

// paths lists the model's paths (sorted, for determinism) for which ok.
func (g *gen) paths(ok func(p string, n *node) bool) []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(g.model)) {
		if ok(p, g.model[p]) {
			out = append(out, p)
		}
	}
	return out
}

func ancestors(p string) []string {
	var out []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		out = append(out, d)
	}
	slices.Reverse(out)
	return out
}

func below(p, dir string) bool { return dir == "" || strings.HasPrefix(p, dir+"/") }

// free says whether this layer may still write p: not written yet, and no
// parent deleted or made a non-dir by this layer.
func (g *gen) free(p string) bool {
	return g.emitted[p] == "" && g.writable(p)
}

// writable says whether this layer may still write into the dir p: neither
// it nor a parent deleted or made a non-dir by this layer.
func (g *gen) writable(p string) bool {
	for _, a := range append(ancestors(p), p) {
		if e := g.emitted[a]; e != "" && e != "dir" {
			return false
		}
	}
	return true
}

// emittedBelow says whether this layer wrote anything below p.
func (g *gen) emittedBelow(p string) bool {
	for q := range g.emitted {
		if below(q, p) && q != p {
			return true
		}
	}
	return false
}

// removeModel drops p and what is below it from the model.
func (g *gen) removeModel(p string) {
	for q := range g.model {
		if q == p || below(q, p) {
			delete(g.model, q)
		}
	}
}

func (g *gen) meta(typ byte) Entry {
	e := Entry{Type: typ}
	switch typ {
	case tar.TypeDir:
		e.Mode = []int64{0o755, 0o755, 0o700, 0o1777, 0o2775, 0o555}[g.src.IntN(6)]
	case tar.TypeReg:
		e.Mode = []int64{0o644, 0o644, 0o755, 0o600, 0o444, 0o4755, 0o2755, 0o6711}[g.src.IntN(8)]
	case tar.TypeSymlink:
		e.Mode = 0o777
	default:
		e.Mode = []int64{0o666, 0o600, 0o660}[g.src.IntN(3)]
	}
	ids := []int{0, 0, 1, 1000, 65534}
	e.UID, e.GID = ids[g.src.IntN(len(ids))], ids[g.src.IntN(len(ids))]
	e.ModTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).
		Add(time.Duration(g.src.IntN(100000)) * time.Second).
		Add(time.Duration(g.src.IntN(1000)) * time.Millisecond)
	if g.chance(3) {
		e.Xattrs = map[string]string{}
		switch g.src.IntN(5) {
		case 0:
			e.Xattrs["trusted.keel"] = "t"
		case 1:
			if typ == tar.TypeReg {
				e.Xattrs["security.capability"] = capability()
				break
			}
			fallthrough
		default:
			e.Xattrs["user.keel"] = g.pick([]string{"v", "w", ""})
		}
	}
	return e
}

// capability is a valid security.capability value (v2, effective,
// CAP_NET_BIND_SERVICE).
func capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

func (g *gen) body() string {
	switch g.src.IntN(40) {
	case 0, 1, 2, 3, 4:
		return ""
	case 5:
		return strings.Repeat("0123456789abcdef", 20<<10) // past core/diff's buffered size
	}
	return strings.Repeat(g.pick(names), 1+g.src.IntN(40))
}

// emit appends e to the layer, after its parents' dir entries.
func (g *gen) emit(e Entry, kind string) {
	for _, a := range ancestors(e.Name) {
		n, ok := g.model[a]
		if !ok {
			n = &node{Entry: Entry{Name: a, Type: tar.TypeDir, Mode: 0o755}} // made as both appliers make parents
			if g.parents {
				n.Entry = g.meta(tar.TypeDir)
				n.Name = a
			}
			g.model[a] = n
		}
		if g.parents && g.emitted[a] == "" {
			g.ents = append(g.ents, n.Entry)
			g.emitted[a] = "dir"
		}
	}
	g.ents = append(g.ents, e)
	if kind != "" {
		g.emitted[e.Name] = kind
	}
}

// place picks where to write a new entry: below an existing dir, maybe in
// new dirs, named like what may already be there. ok is false when that
// name cannot be written by this layer.
func (g *gen) place() (string, bool) {
	dirs := g.paths(func(p string, n *node) bool { return n.Type == tar.TypeDir && g.writable(p) })
	p := g.pick(dirs)
	for range g.src.IntN(3) {
		p = path.Join(p, g.pick(names))
		if n, ok := g.model[p]; ok && n.Type != tar.TypeDir {
			return "", false
		}
	}
	p = path.Join(p, g.pick(names))
	if !g.free(p) {
		return "", false
	}
	if n, ok := g.model[p]; ok && n.Type == tar.TypeDir && g.emittedBelow(p) {
		return "", false // replacing it would undo this layer's own entries
	}
	return p, true
}

// write writes e at p, replacing what the model has there.
func (g *gen) write(p string, e Entry) {
	e.Name = p
	kind := "node"
	if e.Type == tar.TypeDir {
		kind = "dir"
		if n, ok := g.model[p]; ok && n.Type != tar.TypeDir {
			g.removeModel(p)
		}
	} else {
		g.removeModel(p)
	}
	g.emit(e, kind)
	g.files[p] = e.Type == tar.TypeReg
	n := e
	n.Xattrs = maps.Clone(e.Xattrs)
	g.model[p] = &node{Entry: n}
}

func (g *gen) op(first bool) {
	switch k := g.src.IntN(16); {
	case k < 5: // a file
		if p, ok := g.place(); ok {
			e := g.meta(tar.TypeReg)
			e.Body = g.body()
			g.write(p, e)
		}
	case k < 7: // a dir, new, replacing a non-dir, or changing one
		if p, ok := g.place(); ok {
			g.write(p, g.meta(tar.TypeDir))
		}
	case k == 7: // a symlink
		if p, ok := g.place(); ok {
			e := g.meta(tar.TypeSymlink)
			e.Link = g.pick([]string{"a", "../b", "/etc/passwd", "/usr/lib", "lib/x", "."})
			g.write(p, e)
		}
	case k == 8: // a device or fifo
		if p, ok := g.place(); ok {
			e := g.meta([]byte{tar.TypeChar, tar.TypeBlock, tar.TypeFifo}[g.src.IntN(3)])
			if e.Type != tar.TypeFifo {
				e.Major, e.Minor = int64(1+g.src.IntN(8)), int64(g.src.IntN(300))
			}
			g.write(p, e)
		}
	case k == 9: // a hardlink, to a file of this layer or a lower one
		targets := g.paths(func(p string, n *node) bool {
			return n.Type == tar.TypeReg && (g.files[p] || !g.opts.SameLayerHardlinks)
		})
		if len(targets) == 0 {
			return
		}
		t := g.pick(targets)
		p, ok := g.place()
		if !ok || p == t || below(t, p) {
			return
		}
		// Tar writers copy the inode's metadata into a hardlink's header,
		// which the appliers set on it: as is, or changed.
		e := g.model[t].Entry
		if g.chance(2) {
			e = g.meta(tar.TypeReg)
		}
		g.removeModel(p)
		g.emit(Entry{Name: p, Type: tar.TypeLink, Link: t, Mode: e.Mode, UID: e.UID, GID: e.GID, ModTime: e.ModTime, Xattrs: e.Xattrs}, "node")
		g.model[p] = g.model[t]
	case first:
		return
	case k < 12: // delete a file or a dir with what is below it
		cands := g.paths(func(p string, _ *node) bool { return p != "" && g.free(p) && !g.emittedBelow(p) })
		if len(cands) == 0 {
			return
		}
		p := g.pick(cands)
		g.emit(Entry{Name: path.Join(path.Dir(p), ".wh."+path.Base(p)), Type: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}, "")
		g.emitted[p] = "gone"
		g.removeModel(p)
	case k == 12 && g.parents: // recreate a dir: an opaque marker, new contents before or after it
		cands := g.paths(func(p string, n *node) bool { return n.Type == tar.TypeDir && (p == "" || g.free(p)) })
		d := g.pick(cands)
		if d != "" && g.emitted[d] == "" {
			g.write(d, g.meta(tar.TypeDir))
		}
		before := g.src.IntN(3)
		for range before {
			g.child(d)
		}
		g.emit(Entry{Name: path.Join(d, ".wh..wh..opq"), Type: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}, "")
		for q := range g.model {
			if below(q, d) && q != d && g.emitted[q] == "" {
				delete(g.model, q)
			}
		}
		for range g.src.IntN(3) {
			g.child(d)
		}
	case k == 13: // rename a file or symlink: a whiteout and the entry elsewhere
		cands := g.paths(func(p string, n *node) bool {
			return (n.Type == tar.TypeReg || n.Type == tar.TypeSymlink) && g.free(p)
		})
		if len(cands) == 0 {
			return
		}
		from := g.pick(cands)
		e := g.model[from].Entry
		g.emit(Entry{Name: path.Join(path.Dir(from), ".wh."+path.Base(from)), Type: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}, "")
		g.emitted[from] = "gone"
		g.removeModel(from)
		// placed after the whiteout, which lists from's parents
		if to, ok := g.place(); ok {
			g.write(to, e)
		}
	default: // change a node's mode, owner, xattrs (and a file's contents)
		cands := g.paths(func(p string, n *node) bool { return p != "" && n.Type != tar.TypeLink && g.free(p) })
		if len(cands) == 0 {
			return
		}
		p := g.pick(cands)
		old := g.model[p].Entry
		if old.Type == tar.TypeDir && g.emittedBelow(p) {
			return
		}
		e := g.meta(old.Type)
		e.Body, e.Link, e.Major, e.Minor = old.Body, old.Link, old.Major, old.Minor
		if e.Type == tar.TypeReg && g.chance(2) {
			e.Body = g.body()
		}
		g.write(p, e)
	}
}

// child writes a new file or dir in d (of an opaque dir).
func (g *gen) child(d string) {
	p := path.Join(d, g.pick(names))
	if !g.free(p) {
		return
	}
	if n, ok := g.model[p]; ok && n.Type == tar.TypeDir && g.emittedBelow(p) {
		return
	}
	if g.chance(3) {
		g.write(p, g.meta(tar.TypeDir))
		return
	}
	e := g.meta(tar.TypeReg)
	e.Body = g.body()
	g.write(p, e)
}
