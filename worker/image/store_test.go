package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/skiff-sh/skiff/worker/internal/testimage"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Fatal("needs root on linux (whiteout device nodes, trusted.* xattrs, overlay mounts): run the tests as root, as make test in CI does")
	}
}

func openTestStore(t *testing.T, insecure []string) *Store {
	t.Helper()
	return openStoreAt(t, t.TempDir(), insecure)
}

func openStoreAt(t *testing.T, dir string, insecure []string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.InsecureRegistries = insecure
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustLayer(t *testing.T, files ...testimage.File) v1.Layer {
	t.Helper()
	l, err := testimage.Layer(files...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustPush(t *testing.T, reg *testimage.Registry, repoTag string, cfg v1.Config, layers ...v1.Layer) string {
	t.Helper()
	img, err := testimage.Image(cfg, layers...)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestEnsureSharesLayersAndUnpacksOnce(t *testing.T) {
	requireRoot(t)
	reg := testimage.NewRegistry()
	t.Cleanup(reg.Close)
	base := mustLayer(t,
		testimage.File{Name: "etc/", Type: tar.TypeDir},
		testimage.File{Name: "etc/base", Body: []byte("base")},
		testimage.File{Name: "etc/old", Body: []byte("old")},
	)
	refA := mustPush(t, reg, "a:v1", v1.Config{Entrypoint: []string{"/a"}, Cmd: []string{"x"}, Env: []string{"A=1"}, WorkingDir: "/w", User: "1000:1000", StopSignal: "SIGINT"},
		base, mustLayer(t, testimage.File{Name: "a", Body: []byte("a")}, testimage.File{Name: "etc/.wh.old"}))
	refB := mustPush(t, reg, "b:v1", v1.Config{Entrypoint: []string{"/b"}},
		base, mustLayer(t, testimage.File{Name: "b", Body: []byte("b")}))

	s := openTestStore(t, []string{reg.Host})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	imgs := make([]*Image, 4)
	errs := make([]error, 4)
	for i, ref := range []string{refA, refB, refA, refB} {
		wg.Go(func() { imgs[i], errs[i] = s.Ensure(ctx, ref, PullIfNotPresent) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ensure %d: %v", i, err)
		}
	}
	if n := s.unpacks.Load(); n != 3 {
		t.Errorf("layers unpacked %d times, want 3 (shared base once)", n)
	}
	a, b := imgs[0], imgs[1]
	if len(a.Layers) != 2 || len(b.Layers) != 2 || a.Layers[0] != b.Layers[0] {
		t.Fatalf("layers: a=%v b=%v", a.Layers, b.Layers)
	}
	if got, _ := os.ReadFile(filepath.Join(a.Layers[1], "a")); string(got) != "a" {
		t.Errorf("top layer of a: %q", got)
	}
	want := ImageConfig{Entrypoint: []string{"/a"}, Cmd: []string{"x"}, Env: []string{"A=1"}, WorkingDir: "/w", User: "1000:1000", StopSignal: "SIGINT"}
	if a.Config.User != want.User || a.Config.WorkingDir != want.WorkingDir || a.Config.StopSignal != want.StopSignal ||
		len(a.Config.Entrypoint) != 1 || a.Config.Entrypoint[0] != "/a" || len(a.Config.Env) != 1 {
		t.Errorf("config = %+v, want %+v", a.Config, want)
	}
	if a.Ref != refA || a.Digest == "" || a.ID != reg.Host+"/a@"+a.Digest {
		t.Errorf("image identity: %+v", a)
	}

	// Pulling again unpacks nothing.
	if _, err := s.Ensure(ctx, refA, PullAlways); err != nil {
		t.Fatal(err)
	}
	if n := s.unpacks.Load(); n != 3 {
		t.Errorf("re-pull unpacked layers again: %d", n)
	}
}

func TestPullPolicies(t *testing.T) {
	requireRoot(t)
	reg := testimage.NewRegistry()
	t.Cleanup(reg.Close)
	ref := mustPush(t, reg, "p:v1", v1.Config{Cmd: []string{"/v1"}}, mustLayer(t, testimage.File{Name: "v", Body: []byte("1")}))
	dir := t.TempDir()
	s := openStoreAt(t, dir, []string{reg.Host})
	ctx := ctxT(t)

	if _, err := s.Ensure(ctx, ref, PullNever); !errors.Is(err, ErrImageNeverPull) {
		t.Fatalf("Never on absent image: %v, want ErrImageNeverPull", err)
	}
	if _, err := s.Ensure(ctx, ref, "Sometimes"); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("bad policy: %v", err)
	}
	v1img, err := s.Ensure(ctx, ref, PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}

	// A new version under the same tag: IfNotPresent keeps the local one,
	// Always moves to the new one.
	mustPush(t, reg, "p:v1", v1.Config{Cmd: []string{"/v2"}}, mustLayer(t, testimage.File{Name: "v", Body: []byte("2")}))
	if img, err := s.Ensure(ctx, ref, PullIfNotPresent); err != nil || img.Digest != v1img.Digest {
		t.Fatalf("IfNotPresent: %v %v", img, err)
	}
	v2img, err := s.Ensure(ctx, ref, PullAlways)
	if err != nil || v2img.Digest == v1img.Digest || v2img.Config.Cmd[0] != "/v2" {
		t.Fatalf("Always: %+v %v", v2img, err)
	}

	// With the registry gone, a reopened store still has the image.
	reg.Close()
	s2 := openStoreAt(t, dir, []string{reg.Host})
	for _, p := range []string{PullNever, PullIfNotPresent, ""} {
		if img, err := s2.Ensure(ctx, ref, p); err != nil || img.Digest != v2img.Digest {
			t.Errorf("policy %q offline: %v %v", p, img, err)
		}
	}
	byDigest := reg.Host + "/p@" + v1img.Digest
	if img, err := s2.Ensure(ctx, byDigest, PullNever); err != nil || img.Digest != v1img.Digest {
		t.Errorf("by digest offline: %v %v", img, err)
	}
	if _, err := s2.Ensure(ctx, ref, PullAlways); err == nil {
		t.Errorf("Always with the registry down succeeded")
	}

	// Remove + GC drop the images and their layers.
	if err := s2.Remove(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if n, err := s2.GC(nil); err != nil || n != 2 {
		t.Errorf("GC removed %d layers (%v), want 2", n, err)
	}
	if entries, _ := os.ReadDir(s2.layersDir()); len(entries) != 0 {
		t.Errorf("layers left after GC: %v", entries)
	}
}

func TestPlainHTTPNeedsInsecureRegistries(t *testing.T) {
	reg := testimage.NewRegistry()
	t.Cleanup(reg.Close)
	ref := mustPush(t, reg, "x:v1", v1.Config{}, mustLayer(t, testimage.File{Name: "f"}))
	s := openTestStore(t, nil)
	if _, err := s.Ensure(ctxT(t), ref, PullAlways); !errors.Is(err, ErrInsecureRegistry) {
		t.Fatalf("err = %v, want ErrInsecureRegistry", err)
	}
}

func TestDefaultPullPolicy(t *testing.T) {
	for ref, want := range map[string]string{
		"nginx":           PullAlways,
		"nginx:latest":    PullAlways,
		"nginx:1.27":      PullIfNotPresent,
		"reg:5000/app:v1": PullIfNotPresent,
		"nginx@sha256:" + "0123456789012345678901234567890123456789012345678901234567890123": PullIfNotPresent,
	} {
		if got := DefaultPullPolicy(ref); got != want {
			t.Errorf("DefaultPullPolicy(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Error("empty DataDir accepted")
	}
	cfg.DataDir = "/var/lib/a:b"
	if err := cfg.Validate(); err == nil {
		t.Error("DataDir with ':' accepted")
	}
	cfg.DataDir = "/var/lib/skiff"
	cfg.InsecureRegistries = []string{"http://x"}
	if err := cfg.Validate(); err == nil {
		t.Error("insecure registry with scheme accepted")
	}
}
