// Command image packs files (static binaries) into a single-layer container
// image and writes it as a `docker save`-style tarball that
// `ctr -n k8s.io images import` (and `docker load`) read. It needs no Docker
// engine and no registry. Images are reproducible: every file gets the same
// fixed modification time and the image a fixed creation time, so the same
// binaries give the same image ID.
//
//	go run . -o out.tar -tag NAME:TAG [-tag ...] \
//	    -file SRC:DST[:MODE] [-file ...] [-dir SRC:DST ...] [-exclude PATTERN ...] \
//	    [-nonroot] [-user UID:GID] \
//	    [-entrypoint PATH] [-cmd ARG ...] [-env K=V ...] [-label K=V ...]
//
// -file follows symbolic links and stores the file they name. -dir adds a
// whole tree with its files' permission bits; symbolic links inside it stay
// links. -exclude leaves out what -dir would add: a PATTERN with a slash
// (path.Match syntax) matches the path in the image, like
// /usr/lib/python3.11/test; one without matches a name at any depth, like
// __pycache__; an excluded directory is left out with everything in it.
//
// -nonroot adds what a distroless "nonroot" base has: /etc/passwd and
// /etc/group with root, nobody and nonroot (65532), /home/nonroot and a
// world-writable sticky /tmp.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the modification time of every file and the image's creation
// time (reproducible builds; the value is the SOURCE_DATE_EPOCH convention's 1).
var epoch = time.Unix(1, 0).UTC()

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

type entry struct {
	dst      string
	mode     int64
	uid, gid int
	dir      bool
	link     string // target of a symbolic link
	data     []byte // nil for directories
	src      string // read lazily
}

// spec is what an image is made of.
type spec struct {
	out                          string
	tags, files, dirs, excludes  list
	nonroot                      bool
	user                         string
	entrypoint, cmd, env, labels list
}

func main() {
	var s spec
	flag.StringVar(&s.out, "o", "", "output tarball")
	flag.Var(&s.tags, "tag", "image reference NAME:TAG (repeatable)")
	flag.Var(&s.files, "file", "SRC:DST[:MODE] file to add (repeatable; MODE octal, default 0755)")
	flag.Var(&s.dirs, "dir", "SRC:DST directory tree to add (repeatable)")
	flag.Var(&s.excludes, "exclude", "PATTERN of paths -dir leaves out (repeatable; with a slash: the path in the image, without: a name at any depth)")
	flag.BoolVar(&s.nonroot, "nonroot", false, "add /etc/passwd, /etc/group, /home/nonroot and /tmp like distroless nonroot")
	flag.StringVar(&s.user, "user", "", "USER of the image, e.g. 65532:65532")
	flag.Var(&s.entrypoint, "entrypoint", "ENTRYPOINT element (repeatable)")
	flag.Var(&s.cmd, "cmd", "CMD element (repeatable)")
	flag.Var(&s.env, "env", "ENV K=V (repeatable; PATH is set by default)")
	flag.Var(&s.labels, "label", "LABEL K=V (repeatable)")
	flag.Parse()
	// An argument that is not a flag would end flag parsing and silently
	// drop every flag after it.
	if s.out == "" || len(s.tags) == 0 || len(s.files)+len(s.dirs) == 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(s); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(s spec) error {
	var entries []entry
	if s.nonroot {
		entries = append(entries,
			entry{dst: "etc", mode: 0o755, dir: true},
			entry{dst: "etc/passwd", mode: 0o644, data: []byte(
				"root:x:0:0:root:/root:/sbin/nologin\n" +
					"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
					"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
			entry{dst: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
			entry{dst: "home", mode: 0o755, dir: true},
			entry{dst: "home/nonroot", mode: 0o700, dir: true, uid: 65532, gid: 65532},
			entry{dst: "tmp", mode: 0o1777, dir: true},
		)
	}
	for _, f := range s.files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("bad -file %q (want SRC:DST[:MODE])", f)
		}
		mode := int64(0o755)
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 32)
			if err != nil {
				return fmt.Errorf("bad mode in -file %q: %w", f, err)
			}
			mode = m
		}
		if _, err := os.Stat(parts[0]); err != nil {
			return err
		}
		dst := strings.TrimPrefix(path.Clean("/"+parts[1]), "/")
		entries = append(entries, parents(dst)...)
		entries = append(entries, entry{dst: dst, mode: mode, src: parts[0]})
	}
	for _, d := range s.dirs {
		src, dst, ok := strings.Cut(d, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("bad -dir %q (want SRC:DST)", d)
		}
		tree, err := walkDir(src, strings.TrimPrefix(path.Clean("/"+dst), "/"), s.excludes)
		if err != nil {
			return err
		}
		entries = append(entries, tree...)
	}
	layerTar, err := buildTar(entries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.User = s.user
	cfg.Config.Entrypoint = s.entrypoint
	cfg.Config.Cmd = s.cmd
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, s.env...)
	if len(s.labels) > 0 {
		cfg.Config.Labels = map[string]string{}
		for _, l := range s.labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("bad -label %q", l)
			}
			cfg.Config.Labels[k] = v
		}
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range s.tags {
		ref, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("bad -tag %q: %w", t, err)
		}
		refs[ref] = img
	}
	tmp := s.out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.out); err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", s.out, id, s.tags.String())
	return nil
}

// parents are the directories above dst (a path in the image without the
// leading slash), root first.
func parents(dst string) []entry {
	var dirs []entry
	for dir := path.Dir(dst); dir != "." && dir != "/"; dir = path.Dir(dir) {
		dirs = append([]entry{{dst: dir, mode: 0o755, dir: true}}, dirs...)
	}
	return dirs
}

// excluded reports whether dst (without the leading slash) matches one of
// the -exclude patterns.
func excluded(dst string, patterns list) bool {
	for _, p := range patterns {
		subject := path.Base(dst)
		if strings.Contains(p, "/") {
			subject, p = dst, strings.TrimPrefix(p, "/")
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}

// walkDir lists the tree at src as entries under dst, keeping permission
// bits and symbolic links, leaving out what the patterns exclude.
func walkDir(src, dst string, patterns list) ([]entry, error) {
	entries := parents(dst)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := path.Join(dst, filepath.ToSlash(rel))
		if rel != "." && excluded(to, patterns) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(info.Mode().Perm())
		switch {
		case d.IsDir():
			entries = append(entries, entry{dst: to, mode: mode, dir: true})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			entries = append(entries, entry{dst: to, mode: 0o777, link: target})
		case d.Type().IsRegular():
			entries = append(entries, entry{dst: to, mode: mode, src: p})
		default:
			return fmt.Errorf("-dir %s: %s is neither a file, a directory nor a symbolic link", src, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("-dir %s: %w", src, err)
	}
	return entries, nil
}

// buildTar writes the layer: directories once each, parents first, then
// files, all with the fixed epoch and numeric owners.
func buildTar(entries []entry) ([]byte, error) {
	seen := map[string]bool{}
	var uniq []entry
	for _, e := range entries {
		if seen[e.dst] {
			continue
		}
		seen[e.dst] = true
		uniq = append(uniq, e)
	}
	sort.SliceStable(uniq, func(i, j int) bool { return uniq[i].dst < uniq[j].dst })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range uniq {
		hdr := &tar.Header{
			Name:    e.dst,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if e.dir || e.link != "" {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if e.link != "" {
				hdr.Typeflag, hdr.Name, hdr.Linkname = tar.TypeSymlink, e.dst, e.link
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data := e.data
		if e.src != "" {
			var err error
			if data, err = os.ReadFile(e.src); err != nil {
				return nil, err
			}
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
