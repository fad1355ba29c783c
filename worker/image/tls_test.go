package image

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/skiff-sh/skiff/worker/internal/testimage"
)

// tlsRegistry serves an in-process registry over HTTPS on 127.0.0.1 with
// httptest's self-signed certificate, pushes a one-layer image to it and
// returns the image reference and a PEM file holding the certificate (the
// registry's CA).
func tlsRegistry(t *testing.T) (ref, caFile string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	// The untrusting client's failed handshakes are expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ref = u.Host + "/secure:v1"
	img, err := testimage.Image(v1.Config{Cmd: []string{"/tls"}}, mustLayer(t, testimage.File{Name: "over-tls", Body: []byte("yes")}))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	// The pusher trusts the server's certificate through its client.
	if err := remote.Write(tag, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatalf("push over TLS: %v", err)
	}
	caFile = filepath.Join(t.TempDir(), "registry-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ref, caFile
}

func openStoreWithCAs(t *testing.T, caFiles ...string) (*Store, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CAFiles = caFiles
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return Open(cfg)
}

// TestPullOverTLSWithRegistryCA pulls from a registry that speaks only TLS
// with a certificate of its own CA: trusted through CAFiles the pull works
// (no InsecureRegistries needed); without it, it fails with an x509 error
// that says how to trust the CA.
func TestPullOverTLSWithRegistryCA(t *testing.T) {
	requireRoot(t)
	ref, caFile := tlsRegistry(t)

	s, err := openStoreWithCAs(t, caFile)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Ensure(ctxT(t), ref, PullAlways)
	if err != nil {
		t.Fatalf("pull over TLS with the registry's CA: %v", err)
	}
	if len(img.Layers) != 1 || len(img.Config.Cmd) != 1 || img.Config.Cmd[0] != "/tls" {
		t.Fatalf("image = %+v", img)
	}
	if b, err := os.ReadFile(filepath.Join(img.Layers[0], "over-tls")); err != nil || string(b) != "yes" {
		t.Errorf("layer content = %q, %v", b, err)
	}

	untrusting, err := openStoreWithCAs(t)
	if err != nil {
		t.Fatal(err)
	}
	_, err = untrusting.Ensure(ctxT(t), ref, PullAlways)
	var ua x509.UnknownAuthorityError
	switch {
	case err == nil:
		t.Fatal("pull from a registry with an untrusted certificate succeeded")
	case !errors.Is(err, ErrUnknownAuthority) || !errors.As(err, &ua):
		t.Fatalf("err = %v, want ErrUnknownAuthority wrapping the x509 error", err)
	case errors.Is(err, ErrInsecureRegistry):
		t.Errorf("err = %v: the refused plain-HTTP fallback hides the x509 error", err)
	}
	t.Logf("without the CA: %v", err)
	for _, want := range []string{"x509: certificate signed by unknown authority", "--registry-ca-file", "CAFiles", strings.Split(ref, "/")[0]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to mention %q", err, want)
		}
	}
}

func TestRegistryCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "missing.pem"), "no such file"},
		{"not PEM", notPEM, "no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := openStoreWithCAs(t, tt.file); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("Open with CAFiles %s: %v, want an error naming the file and %q", tt.file, err, tt.want)
			}
		})
	}

	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.CAFiles = []string{""}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "CAFiles[0]") {
		t.Errorf("empty CA file accepted: %v", err)
	}
	cfg.CAFiles = []string{notPEM}
	cfg.Transport = http.NewFileTransport(http.Dir(dir))
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "CAFiles") {
		t.Errorf("CAFiles with a transport that cannot take them accepted: %v", err)
	}
}
