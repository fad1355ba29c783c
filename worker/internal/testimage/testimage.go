// Package testimage is test scaffolding shared by the worker's packages: it
// builds testapp (a static Go program, see testdata/testapp) at test time,
// packs it into an OCI image with go-containerregistry, and serves images
// from an in-process registry on 127.0.0.1 so tests pull over real HTTP.
package testimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// AppPath is where testapp lives in AppImage.
const AppPath = "/bin/testapp"

// File is one entry of a layer built by Layer.
type File struct {
	Name     string
	Type     byte // tar.TypeReg when zero
	Mode     int64
	Body     []byte
	Linkname string
	Uid, Gid int
	Xattrs   map[string]string
	// Devmajor and Devminor are for tar.TypeChar / tar.TypeBlock.
	Devmajor, Devminor int64
}

// Tar returns an uncompressed tar of files, in order.
func Tar(files ...File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{
			Name:     f.Name,
			Typeflag: f.Type,
			Mode:     f.Mode,
			Linkname: f.Linkname,
			Uid:      f.Uid,
			Gid:      f.Gid,
			ModTime:  mtime,
			Devmajor: f.Devmajor,
			Devminor: f.Devminor,
			Format:   tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(f.Body))
		}
		for k, v := range f.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Layer returns an image layer holding files.
func Layer(files ...File) (v1.Layer, error) {
	b, err := Tar(files...)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// Image returns an image of layers (lowest first) with the given run config.
func Image(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// AppBinary returns the path of testapp, built statically for linux once
// per process. The binary is cached in the temp directory under a name that
// includes the hash of its source, so repeated test runs reuse it.
func AppBinary() (string, error) {
	buildOnce.Do(func() { buildPath, buildErr = buildApp() })
	return buildPath, buildErr
}

func buildApp() (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testimage: cannot locate source")
	}
	src := filepath.Join(filepath.Dir(self), "testdata", "testapp")
	code, err := os.ReadFile(filepath.Join(src, "main.go"))
	if err != nil {
		return "", fmt.Errorf("testimage: %w", err)
	}
	sum := sha256.Sum256(append(code, runtime.Version()+runtime.GOARCH...))
	out := filepath.Join(os.TempDir(), "skiff-testapp-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testimage: build testapp: %v\n%s", err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("testimage: %w", err)
	}
	return out, nil
}

// Passwd is /etc/passwd in AppImage: root, app (1000:1000) and nobody.
const Passwd = "root:x:0:0:root:/root:/bin/testapp\n" +
	"app:x:1000:1000:app:/home/app:/bin/testapp\n" +
	"nobody:x:65534:65534:nobody:/nonexistent:/bin/testapp\n"

// Group is /etc/group in AppImage; app is also in group "extra" (2000).
const Group = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"

// AppImage returns a one-layer image with testapp at AppPath as its
// entrypoint, /etc/passwd and /etc/group, a writable /tmp and /home/app.
// Its Cmd is "sleep 1h"; its env has PATH and FROM_IMAGE=yes.
func AppImage() (v1.Image, error) {
	bin, err := AppBinary()
	if err != nil {
		return nil, err
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	l, err := Layer(
		File{Name: "bin/", Type: tar.TypeDir},
		File{Name: "bin/testapp", Mode: 0o755, Body: body},
		File{Name: "etc/", Type: tar.TypeDir},
		File{Name: "etc/passwd", Body: []byte(Passwd)},
		File{Name: "etc/group", Body: []byte(Group)},
		File{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		File{Name: "home/", Type: tar.TypeDir},
		File{Name: "home/app/", Type: tar.TypeDir, Uid: 1000, Gid: 1000},
	)
	if err != nil {
		return nil, err
	}
	return Image(v1.Config{
		Entrypoint: []string{AppPath},
		Cmd:        []string{"sleep", "1h"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FROM_IMAGE=yes"},
		WorkingDir: "/",
	}, l)
}

// Registry is an in-process OCI registry listening on 127.0.0.1 over plain
// HTTP (so stores must list Host as insecure).
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	srv  *httptest.Server
}

// NewRegistry starts a registry; Close stops it.
func NewRegistry() *Registry {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	u, _ := url.Parse(srv.URL)
	return &Registry{Host: u.Host, srv: srv}
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// Push uploads img as repoTag ("repo:tag", no host) and returns the full
// reference.
func (r *Registry) Push(repoTag string, img v1.Image) (string, error) {
	ref := r.Host + "/" + repoTag
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(tag, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// Setup starts a registry for the test, pushes AppImage to it as
// "testapp:v1" and returns the registry and the image reference.
func Setup(t testing.TB) (*Registry, string) {
	t.Helper()
	reg := NewRegistry()
	t.Cleanup(reg.Close)
	img, err := AppImage()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push("testapp:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	return reg, ref
}
