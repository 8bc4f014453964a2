// Command image packs files (static binaries) into a single-layer container
// image and writes it as a `docker save`-style tarball that
// `ctr -n k8s.io images import` (and `docker load`) read. It needs no Docker
// engine and no registry. Images are reproducible: every file gets the same
// fixed modification time and the image a fixed creation time, so the same
// binaries give the same image ID.
//
//	go run . -o out.tar -tag NAME:TAG [-tag ...] \
//	    -file SRC:DST[:MODE] [-file ...] [-nonroot] [-user UID:GID] \
//	    [-entrypoint PATH] [-cmd ARG ...] [-env K=V ...] [-label K=V ...]
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
	"os"
	"path"
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
	data     []byte // nil for directories
	src      string // read lazily
}

func main() {
	var tags, files, cmd, env, labels, entrypoint list
	out := flag.String("o", "", "output tarball")
	flag.Var(&tags, "tag", "image reference NAME:TAG (repeatable)")
	flag.Var(&files, "file", "SRC:DST[:MODE] file to add (repeatable; MODE octal, default 0755)")
	nonroot := flag.Bool("nonroot", false, "add /etc/passwd, /etc/group, /home/nonroot and /tmp like distroless nonroot")
	user := flag.String("user", "", "USER of the image, e.g. 65532:65532")
	flag.Var(&entrypoint, "entrypoint", "ENTRYPOINT element (repeatable)")
	flag.Var(&cmd, "cmd", "CMD element (repeatable)")
	flag.Var(&env, "env", "ENV K=V (repeatable; PATH is set by default)")
	flag.Var(&labels, "label", "LABEL K=V (repeatable)")
	flag.Parse()
	if *out == "" || len(tags) == 0 || len(files) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, tags, files, *nonroot, *user, entrypoint, cmd, env, labels); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(out string, tags, files list, nonroot bool, user string, entrypoint, cmd, env, labels list) error {
	var entries []entry
	if nonroot {
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
	for _, f := range files {
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
		for dir := path.Dir(dst); dir != "." && dir != "/"; dir = path.Dir(dir) {
			entries = append(entries, entry{dst: dir, mode: 0o755, dir: true})
		}
		entries = append(entries, entry{dst: dst, mode: mode, src: parts[0]})
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
	cfg.Config.User = user
	cfg.Config.Entrypoint = entrypoint
	cfg.Config.Cmd = cmd
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	if len(labels) > 0 {
		cfg.Config.Labels = map[string]string{}
		for _, l := range labels {
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
	for _, t := range tags {
		ref, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("bad -tag %q: %w", t, err)
		}
		refs[ref] = img
	}
	tmp := out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", out, id, tags.String())
	return nil
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
		if e.dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
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
