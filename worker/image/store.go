// Package image is the worker's local image store: it pulls OCI images with
// go-containerregistry, unpacks every layer once per diffID into its own
// directory (with whiteouts in overlayfs form, so the layer directories can be
// stacked directly as overlayfs lowerdirs), and keeps a small JSON index of
// image metadata (config, layer order, digest) so a restarted worker finds its
// images again without the network.
//
// On-disk layout under Config.DataDir:
//
//	layers/<diffID hex>/   one unpacked layer, never modified after its rename
//	images/<digest hex>.json image record: config, diffIDs (lowest first)
//	refs/<sha256(ref)>.json  reference -> manifest digest
//	tmp/                   layers being unpacked (renamed into layers/ when done)
//
// A Store is safe for concurrent use, and several Stores (even in several
// processes) may share a DataDir: every file appears by an atomic rename.
package image

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// Pull policies, with Kubernetes' imagePullPolicy names and meaning.
const (
	PullAlways       = "Always"
	PullIfNotPresent = "IfNotPresent"
	PullNever        = "Never"
)

var (
	// ErrImageNeverPull is returned by Ensure when the policy is Never and
	// the image is not present (Kubernetes reports it as ErrImageNeverPull).
	ErrImageNeverPull = errors.New("image is not present and pull policy is Never")
	// ErrNotFound is returned when an image is not in the store.
	ErrNotFound = errors.New("image not found")
	// ErrInvalidPolicy is returned for an unknown pull policy.
	ErrInvalidPolicy = errors.New("invalid image pull policy")
	// ErrInsecureRegistry is returned when a pull would use plain HTTP to a
	// registry that is not listed in Config.InsecureRegistries.
	ErrInsecureRegistry = errors.New("plain HTTP to a registry not listed as insecure")
	// ErrUnsafeLayer is returned when a layer tries to write outside its
	// directory ("..", absolute or escaping symlinks, escaping hardlinks).
	ErrUnsafeLayer = errors.New("unsafe path in layer")
	// ErrDigestMismatch is returned when a layer's content does not hash to
	// the diffID its image config declares.
	ErrDigestMismatch = errors.New("layer content does not match its diffID")
	// ErrUnknownAuthority is returned when a registry's TLS certificate is
	// not signed by a trusted CA (the system's or one of Config.CAFiles).
	ErrUnknownAuthority = errors.New("registry certificate signed by an unknown authority")
)

// Config configures a Store.
type Config struct {
	// DataDir holds layers and the index. Required. It must not contain ':'
	// or ',' because layer directories are passed to overlayfs as lowerdirs.
	DataDir string
	// InsecureRegistries lists registries (HOST or HOST:PORT, exactly as in
	// image references) that may be reached over plain HTTP. Every other
	// registry must speak TLS, including localhost and private addresses
	// (which go-containerregistry would otherwise allow over HTTP).
	InsecureRegistries []string
	// CAFiles are PEM files of CA certificates trusted for registry TLS in
	// addition to the system's roots: a private registry's own CA. Open
	// fails if one cannot be read or holds no certificate. They need
	// Transport to be an *http.Transport (the default is one).
	CAFiles []string
	// Platform selects the image from multi-platform indexes.
	// Default: linux and the worker's architecture.
	Platform v1.Platform
	// Keychain provides registry credentials. Default: authn.DefaultKeychain
	// (docker config files).
	Keychain authn.Keychain
	// Transport is the HTTP transport used for registry requests.
	// Default: remote.DefaultTransport.
	Transport http.RoundTripper
	// PullParallelism bounds concurrent layer downloads of one pull.
	// Default 3.
	PullParallelism int
	// Logger receives pull progress. Default: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with defaults filled in except DataDir.
func DefaultConfig() Config {
	return Config{
		Platform:        v1.Platform{OS: "linux", Architecture: goruntime.GOARCH},
		Keychain:        authn.DefaultKeychain,
		Transport:       remote.DefaultTransport,
		PullParallelism: 3,
		Logger:          slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("image config: DataDir is required")
	case !filepath.IsAbs(c.DataDir):
		return fmt.Errorf("image config: DataDir %q must be absolute", c.DataDir)
	case strings.ContainsAny(c.DataDir, ":,"):
		return fmt.Errorf("image config: DataDir %q must not contain ':' or ','", c.DataDir)
	case c.Platform.OS == "" || c.Platform.Architecture == "":
		return errors.New("image config: Platform needs OS and Architecture")
	case c.Keychain == nil:
		return errors.New("image config: Keychain is required")
	case c.Transport == nil:
		return errors.New("image config: Transport is required")
	case c.PullParallelism < 1:
		return errors.New("image config: PullParallelism must be at least 1")
	case c.Logger == nil:
		return errors.New("image config: Logger is required")
	}
	for _, r := range c.InsecureRegistries {
		if r == "" || strings.Contains(r, "/") {
			return fmt.Errorf("image config: InsecureRegistries entry %q must be HOST or HOST:PORT", r)
		}
	}
	for i, f := range c.CAFiles {
		if f == "" {
			return fmt.Errorf("image config: CAFiles[%d] is empty: give the path of a PEM file", i)
		}
	}
	if _, ok := c.Transport.(*http.Transport); len(c.CAFiles) > 0 && !ok {
		return fmt.Errorf("image config: CAFiles need Transport to be an *http.Transport (it is %T): put the CAs in that transport's TLS config instead", c.Transport)
	}
	return nil
}

// ImageConfig is the part of an image's config that decides how its
// containers run.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	StopSignal string   `json:"stopSignal,omitempty"`
}

// Image is an image present in the store.
type Image struct {
	// Ref is the reference the caller asked for.
	Ref string
	// Digest is the manifest digest ("sha256:...") of the pulled image
	// (for multi-platform images, the digest of the selected platform's
	// manifest).
	Digest string
	// ID is the repository digest ("registry/repo@sha256:..."), what
	// Kubernetes reports as a container's imageID.
	ID string
	// Layers are the unpacked layer directories, lowest first. Overlayfs
	// wants them in the reverse order (topmost first) in lowerdir.
	Layers []string
	// Config is the image's run configuration.
	Config ImageConfig
}

// Store is a local image store. Use Open to create one.
type Store struct {
	cfg      Config
	log      *slog.Logger
	insecure map[string]bool
	opts     []remote.Option

	// gcMu is held shared by pulls and exclusively by GC, so GC never
	// deletes a layer a concurrent pull is about to record.
	gcMu   sync.RWMutex
	pulls  singleflight.Group
	layers singleflight.Group

	// unpacks counts layer extractions; tests use it to check that a layer
	// is unpacked once.
	unpacks atomic.Int64
}

// Open creates the store's directories under cfg.DataDir and returns the
// store.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "image-store"), insecure: map[string]bool{}}
	for _, r := range cfg.InsecureRegistries {
		s.insecure[r] = true
	}
	for _, d := range []string{s.layersDir(), s.imagesDir(), s.refsDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	// Unpacked layers are stacked as lowerdirs and read by container
	// users of any uid, so the path to them must be traversable.
	for _, d := range []string{cfg.DataDir, s.layersDir()} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	s.cleanTmp()
	transport := cfg.Transport
	if len(cfg.CAFiles) > 0 {
		t, err := withCAFiles(cfg.Transport.(*http.Transport), cfg.CAFiles)
		if err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
		transport = t
	}
	s.opts = []remote.Option{
		remote.WithPlatform(cfg.Platform),
		remote.WithAuthFromKeychain(cfg.Keychain),
		remote.WithTransport(&schemeGuard{base: transport, insecure: s.insecure}),
	}
	return s, nil
}

// withCAFiles returns a copy of base that trusts the certificates of the
// PEM files besides the system's roots.
func withCAFiles(base *http.Transport, files []string) (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("registry CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("registry CA file %s: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)", f)
		}
	}
	t := base.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.RootCAs = pool
	return t, nil
}

// DefaultPullPolicy returns Kubernetes' default imagePullPolicy for ref:
// Always for the tag "latest" or no tag, IfNotPresent otherwise.
func DefaultPullPolicy(ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return PullIfNotPresent
	}
	if t, ok := r.(name.Tag); ok && t.TagStr() == "latest" {
		return PullAlways
	}
	return PullIfNotPresent
}

// Ensure makes the image ref present according to policy (PullAlways,
// PullIfNotPresent, PullNever, or "" for DefaultPullPolicy) and returns it.
// Concurrent calls for the same reference share one pull (with the context
// of the first caller).
func (s *Store) Ensure(ctx context.Context, ref, policy string) (*Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	if policy == "" {
		policy = DefaultPullPolicy(ref)
	}
	switch policy {
	case PullNever, PullIfNotPresent:
		img, err := s.local(r, ref)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if policy == PullNever {
			return nil, fmt.Errorf("ensure image %s: %w", ref, ErrImageNeverPull)
		}
	case PullAlways:
	default:
		return nil, fmt.Errorf("ensure image %s: %w: %q", ref, ErrInvalidPolicy, policy)
	}
	ch := s.pulls.DoChan(r.Name(), func() (any, error) { return s.pull(ctx, r) })
	select {
	case res := <-ch:
		if ua := (x509.UnknownAuthorityError{}); errors.As(res.Err, &ua) {
			// The https attempt's x509 error is the one that matters; the
			// plain-HTTP fallback's refusal next to it would mislead.
			return nil, fmt.Errorf("pull image %s: registry %s: %w: trust its CA with a PEM file in CAFiles (skiff worker --registry-ca-file): %w",
				ref, r.Context().RegistryStr(), ErrUnknownAuthority, ua)
		}
		if res.Err != nil {
			return nil, fmt.Errorf("pull image %s: %w", ref, res.Err)
		}
		return s.toImage(res.Val.(*imageRecord), ref), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("pull image %s: %w", ref, ctx.Err())
	}
}

// Get returns the image ref if it is present, or ErrNotFound.
func (s *Store) Get(ref string) (*Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	return s.local(r, ref)
}

// Remove forgets the reference ref. The image record goes when no reference
// points to it any more; its layers stay until GC.
func (s *Store) Remove(ref string) error {
	r, err := s.parse(ref)
	if err != nil {
		return err
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	rr, err := s.readRef(r.Name())
	if err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	if err := os.Remove(s.refPath(r.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	refs, err := s.allRefs()
	if err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	for _, o := range refs {
		if o.Digest == rr.Digest {
			return nil
		}
	}
	if err := os.Remove(s.imagePath(rr.Digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// GC deletes image records that no reference points to and whose digest is
// not in inUse, then every layer directory no remaining image uses. It
// returns the number of layers deleted. The caller passes the digests of
// images its containers still run from, since their layers are mounted.
func (s *Store) GC(inUse map[string]bool) (int, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	refs, err := s.allRefs()
	if err != nil {
		return 0, fmt.Errorf("image gc: %w", err)
	}
	keep := map[string]bool{}
	for d := range inUse {
		keep[d] = true
	}
	for _, r := range refs {
		keep[r.Digest] = true
	}
	entries, err := os.ReadDir(s.imagesDir())
	if err != nil {
		return 0, fmt.Errorf("image gc: %w", err)
	}
	liveLayers := map[string]bool{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rec, err := readJSON[imageRecord](filepath.Join(s.imagesDir(), e.Name()))
		if err != nil {
			return 0, fmt.Errorf("image gc: %w", err)
		}
		if !keep[rec.Digest] {
			if err := os.Remove(filepath.Join(s.imagesDir(), e.Name())); err != nil {
				return 0, fmt.Errorf("image gc: %w", err)
			}
			continue
		}
		for _, d := range rec.DiffIDs {
			liveLayers[filepath.Base(s.layerPath(d))] = true
		}
	}
	layers, err := os.ReadDir(s.layersDir())
	if err != nil {
		return 0, fmt.Errorf("image gc: %w", err)
	}
	removed := 0
	for _, l := range layers {
		if liveLayers[l.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.layersDir(), l.Name())); err != nil {
			return removed, fmt.Errorf("image gc: %w", err)
		}
		removed++
	}
	return removed, nil
}

// imageRecord is the JSON index entry of one image.
type imageRecord struct {
	Digest     string      `json:"digest"`
	RepoDigest string      `json:"repoDigest"`
	DiffIDs    []string    `json:"diffIDs"` // lowest first
	Config     ImageConfig `json:"config"`
	PulledAt   time.Time   `json:"pulledAt"`
}

type refRecord struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

func (s *Store) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	if s.insecure[r.Context().RegistryStr()] {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("parse image reference %q: %w", ref, err)
		}
	}
	return r, nil
}

// local returns the stored image for r if its record and all its layers
// exist.
func (s *Store) local(r name.Reference, ref string) (*Image, error) {
	digest := ""
	if d, ok := r.(name.Digest); ok {
		digest = d.DigestStr()
	} else {
		rr, err := s.readRef(r.Name())
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		digest = rr.Digest
	}
	rec, err := s.readImage(digest)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if !s.layersPresent(rec) {
		return nil, fmt.Errorf("image %s: layers missing: %w", ref, ErrNotFound)
	}
	return s.toImage(rec, ref), nil
}

func (s *Store) pull(ctx context.Context, r name.Reference) (*imageRecord, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	start := time.Now()
	opts := append(slices.Clip(s.opts), remote.WithContext(ctx))
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, err
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	if rec, err := s.readImage(dg.String()); err == nil && s.layersPresent(rec) {
		return rec, s.writeRef(r.Name(), rec.Digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if cf.OS != "" && cf.OS != s.cfg.Platform.OS {
		return nil, fmt.Errorf("image is for OS %q, want %q", cf.OS, s.cfg.Platform.OS)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("manifest has %d layers but config has %d diffIDs", len(layers), len(cf.RootFS.DiffIDs))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.PullParallelism)
	for i, l := range layers {
		diffID := cf.RootFS.DiffIDs[i]
		g.Go(func() error { return s.ensureLayer(gctx, diffID, l) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	rec := &imageRecord{
		Digest:     dg.String(),
		RepoDigest: r.Context().Digest(dg.String()).String(),
		Config: ImageConfig{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
			StopSignal: cf.Config.StopSignal,
		},
		PulledAt: time.Now().UTC(),
	}
	for _, d := range cf.RootFS.DiffIDs {
		rec.DiffIDs = append(rec.DiffIDs, d.String())
	}
	if err := writeJSON(s.imagePath(rec.Digest), rec); err != nil {
		return nil, err
	}
	if err := s.writeRef(r.Name(), rec.Digest); err != nil {
		return nil, err
	}
	s.log.Info("pulled image", "ref", r.Name(), "digest", rec.Digest, "layers", len(layers), "duration", time.Since(start))
	return rec, nil
}

// ensureLayer unpacks l into its layer directory unless it is there.
// Concurrent callers in this process share one extraction; across processes
// the atomic rename makes the loser discard its copy.
func (s *Store) ensureLayer(ctx context.Context, diffID v1.Hash, l v1.Layer) error {
	if diffID.Algorithm != "sha256" {
		return fmt.Errorf("layer %s: unsupported digest algorithm", diffID)
	}
	dir := s.layerPath(diffID.String())
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	ch := s.layers.DoChan(diffID.String(), func() (any, error) {
		if _, err := os.Stat(dir); err == nil {
			return nil, nil
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", diffID, err)
		}
		defer rc.Close()
		return nil, s.unpackLayer(ctx, diffID.String(), rc)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unpackLayer extracts the uncompressed layer tar r into the directory of
// diffID, verifying the content against diffID.
func (s *Store) unpackLayer(ctx context.Context, diffID string, r io.Reader) (retErr error) {
	dir := s.layerPath(diffID)
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	h := sha256.New()
	tee := io.TeeReader(r, h)
	if err := unpack(ctx, tmp, tee); err != nil {
		return fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	// The tar reader stops at the end-of-archive marker; hash the padding
	// after it too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return fmt.Errorf("unpack layer %s: %w (got %s)", diffID, ErrDigestMismatch, got)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	s.unpacks.Add(1)
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			// Another process won the race; its copy is identical.
			_ = os.RemoveAll(tmp)
			return nil
		}
		return fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	return nil
}

func (s *Store) toImage(rec *imageRecord, ref string) *Image {
	img := &Image{Ref: ref, Digest: rec.Digest, ID: rec.RepoDigest, Config: rec.Config}
	// A diffID can appear more than once in a stack (e.g. empty layers);
	// overlayfs needs distinct lowerdirs, and keeping only the topmost
	// occurrence gives the same merged view.
	seen := map[string]bool{}
	for i := len(rec.DiffIDs) - 1; i >= 0; i-- {
		d := rec.DiffIDs[i]
		if seen[d] {
			continue
		}
		seen[d] = true
		img.Layers = append(img.Layers, s.layerPath(d))
	}
	slices.Reverse(img.Layers)
	return img
}

func (s *Store) layersPresent(rec *imageRecord) bool {
	for _, d := range rec.DiffIDs {
		if _, err := os.Stat(s.layerPath(d)); err != nil {
			return false
		}
	}
	return true
}

func (s *Store) readImage(digest string) (*imageRecord, error) {
	rec, err := readJSON[imageRecord](s.imagePath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return rec, err
}

func (s *Store) readRef(ref string) (*refRecord, error) {
	rr, err := readJSON[refRecord](s.refPath(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return rr, err
}

func (s *Store) writeRef(ref, digest string) error {
	return writeJSON(s.refPath(ref), &refRecord{Ref: ref, Digest: digest})
}

func (s *Store) allRefs() ([]*refRecord, error) {
	entries, err := os.ReadDir(s.refsDir())
	if err != nil {
		return nil, err
	}
	var out []*refRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rr, err := readJSON[refRecord](filepath.Join(s.refsDir(), e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rr)
	}
	return out, nil
}

// cleanTmp removes extraction leftovers of crashed pulls. Only old ones go:
// another process may be extracting into tmp right now.
func (s *Store) cleanTmp() {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.RemoveAll(filepath.Join(s.tmpDir(), e.Name()))
		}
	}
}

func (s *Store) layersDir() string { return filepath.Join(s.cfg.DataDir, "layers") }
func (s *Store) imagesDir() string { return filepath.Join(s.cfg.DataDir, "images") }
func (s *Store) refsDir() string   { return filepath.Join(s.cfg.DataDir, "refs") }
func (s *Store) tmpDir() string    { return filepath.Join(s.cfg.DataDir, "tmp") }

// layerPath names a layer directory by the hex of its diffID: overlayfs
// uses ':' as the lowerdir separator, so "sha256:" cannot be in the name.
func (s *Store) layerPath(diffID string) string {
	return filepath.Join(s.layersDir(), strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Store) imagePath(digest string) string {
	return filepath.Join(s.imagesDir(), strings.ReplaceAll(digest, ":", "-")+".json")
}

func (s *Store) refPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.refsDir(), hex.EncodeToString(sum[:])+".json")
}

// schemeGuard refuses plain-HTTP requests to registries not listed as
// insecure. go-containerregistry falls back to HTTP for localhost and
// private addresses on its own; a worker must not.
type schemeGuard struct {
	base     http.RoundTripper
	insecure map[string]bool
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.insecure[req.URL.Host] {
		return nil, fmt.Errorf("%w: %s (add it to InsecureRegistries to allow)", ErrInsecureRegistry, req.URL.Host)
	}
	return g.base.RoundTrip(req)
}

func readJSON[T any](path string) (*T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return v, nil
}

// writeJSON writes v to path atomically (temp file, fsync, rename).
func writeJSON(path string, v any) (retErr error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
