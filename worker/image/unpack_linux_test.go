package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/internal/testimage"
)

func unpackFiles(t *testing.T, dst string, files ...testimage.File) error {
	t.Helper()
	b, err := testimage.Tar(files...)
	if err != nil {
		t.Fatal(err)
	}
	return unpack(context.Background(), dst, bytes.NewReader(b))
}

func TestUnpackWhiteoutsAsOverlay(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	l1, l2 := filepath.Join(base, "l1"), filepath.Join(base, "l2")
	for _, d := range []string{l1, l2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unpackFiles(t, l1,
		testimage.File{Name: "a/", Type: tar.TypeDir},
		testimage.File{Name: "a/x", Body: []byte("x")},
		testimage.File{Name: "a/y", Body: []byte("y")},
		testimage.File{Name: "b/", Type: tar.TypeDir},
		testimage.File{Name: "b/z", Body: []byte("z")},
		testimage.File{Name: "suid", Mode: 0o4755, Body: []byte("s"), Uid: 12, Gid: 34},
		testimage.File{Name: "hard", Type: tar.TypeLink, Linkname: "a/y"},
		testimage.File{Name: "abs", Type: tar.TypeSymlink, Linkname: "/etc/passwd"},
		testimage.File{Name: "dev/", Type: tar.TypeDir},
		testimage.File{Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8, Devminor: 0},
		testimage.File{Name: "dev/mem", Type: tar.TypeChar, Devmajor: 1, Devminor: 1},
		testimage.File{Name: "fifo", Type: tar.TypeFifo, Mode: 0o600},
		testimage.File{Name: "cap", Body: []byte("c"), Xattrs: map[string]string{"user.skiff": "v", "trusted.overlay.opaque": "y"}},
	); err != nil {
		t.Fatal(err)
	}
	if err := unpackFiles(t, l2,
		testimage.File{Name: "a/.wh.x"},
		testimage.File{Name: "b/.wh..wh..opq"},
		testimage.File{Name: "b/new", Body: []byte("new")},
		testimage.File{Name: "gone/.wh..wh.plnk"},
	); err != nil {
		t.Fatal(err)
	}

	// Layer 1: attributes, links, skipped devices.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(l1, "suid"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o4755 || st.Uid != 12 || st.Gid != 34 {
		t.Errorf("suid: mode %o uid %d gid %d, want 4755 12 34", st.Mode&0o7777, st.Uid, st.Gid)
	}
	var sy, sh unix.Stat_t
	_ = unix.Lstat(filepath.Join(l1, "a/y"), &sy)
	_ = unix.Lstat(filepath.Join(l1, "hard"), &sh)
	if sy.Ino != sh.Ino {
		t.Errorf("hard is not a hardlink of a/y")
	}
	if target, err := os.Readlink(filepath.Join(l1, "abs")); err != nil || target != "/etc/passwd" {
		t.Errorf("abs symlink = %q, %v", target, err)
	}
	for _, dev := range []string{"dev/sda", "dev/mem"} {
		if _, err := os.Lstat(filepath.Join(l1, dev)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("device %s was created (err %v)", dev, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(l1, "fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", fi, err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(l1, "cap"), "user.skiff", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr user.skiff: %q %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(l1, "cap"), overlayOpaqueXattr, buf); err == nil {
		t.Errorf("a layer's own trusted.overlay xattr was applied")
	}

	// Layer 2: whiteouts in overlay form.
	if err := unix.Lstat(filepath.Join(l2, "a/x"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/x whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	if n, err := unix.Lgetxattr(filepath.Join(l2, "b"), overlayOpaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("b opaque xattr: %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(l2, "gone/.wh..wh.plnk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("aufs metadata entry was extracted")
	}

	// And overlayfs agrees: mount l2 over l1 and look.
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + l2 + ":" + l1 + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(merged, p)); return err == nil }
	for p, want := range map[string]bool{"a/x": false, "a/y": true, "b/z": false, "b/new": true, "suid": true} {
		if got := exists(p); got != want {
			t.Errorf("merged %s exists = %v, want %v", p, got, want)
		}
	}
}

func TestUnpackRejectsEscapes(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		files func(outside string) []testimage.File
	}{
		{"dotdot", func(string) []testimage.File {
			return []testimage.File{{Name: "../pwned", Body: []byte("x")}}
		}},
		{"nested dotdot", func(string) []testimage.File {
			return []testimage.File{{Name: "a/../../pwned", Body: []byte("x")}}
		}},
		{"through absolute symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "lnk", Type: tar.TypeSymlink, Linkname: outside},
				{Name: "lnk/pwned", Body: []byte("x")},
			}
		}},
		{"through escaping relative symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "up", Type: tar.TypeSymlink, Linkname: "../../../../../../../../../../.." + outside},
				{Name: "up/pwned", Body: []byte("x")},
			}
		}},
		{"dir through symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "lnk", Type: tar.TypeSymlink, Linkname: outside},
				{Name: "lnk/sub/pwned", Body: []byte("x")},
			}
		}},
		{"whiteout through symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "lnk", Type: tar.TypeSymlink, Linkname: outside},
				{Name: "lnk/.wh.victim"},
			}
		}},
		{"opaque through symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "lnk", Type: tar.TypeSymlink, Linkname: outside},
				{Name: "lnk/.wh..wh..opq"},
			}
		}},
		{"hardlink dotdot", func(string) []testimage.File {
			return []testimage.File{{Name: "h", Type: tar.TypeLink, Linkname: "../victim"}}
		}},
		{"hardlink through symlink", func(outside string) []testimage.File {
			return []testimage.File{
				{Name: "lnk", Type: tar.TypeSymlink, Linkname: outside},
				{Name: "h", Type: tar.TypeLink, Linkname: "lnk/victim"},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dst, outside := filepath.Join(base, "layer"), filepath.Join(base, "outside")
			for _, d := range []string{dst, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			victim := filepath.Join(outside, "victim")
			if err := os.WriteFile(victim, []byte("safe"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := unpackFiles(t, dst, tc.files(outside)...)
			if !errors.Is(err, ErrUnsafeLayer) {
				t.Fatalf("unpack err = %v, want ErrUnsafeLayer", err)
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 {
				t.Errorf("outside dir changed: %v", entries)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "safe" {
				t.Errorf("victim changed: %q %v", b, err)
			}
			if _, err := os.Stat(filepath.Join(base, "pwned")); err == nil {
				t.Errorf("file written outside the layer")
			}
			if _, err := unix.Getxattr(outside, overlayOpaqueXattr, make([]byte, 4)); err == nil {
				t.Errorf("opaque xattr set outside the layer")
			}
		})
	}
}

func TestUnpackLayerVerifiesDiffID(t *testing.T) {
	requireRoot(t)
	s := openTestStore(t, nil)
	b, err := testimage.Tar(testimage.File{Name: "f", Body: []byte("content")})
	if err != nil {
		t.Fatal(err)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)
	if err := s.unpackLayer(context.Background(), wrong, bytes.NewReader(b)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if _, err := os.Stat(s.layerPath(wrong)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("layer dir exists after a mismatch")
	}
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp not cleaned: %v", entries)
	}
	sum := sha256.Sum256(b)
	right := "sha256:" + hex.EncodeToString(sum[:])
	if err := s.unpackLayer(context.Background(), right, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.layerPath(right), "f")); err != nil || string(got) != "content" {
		t.Errorf("f = %q, %v", got, err)
	}
}
