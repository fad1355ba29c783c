package worker

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/worker/image"
	"github.com/skiff-sh/skiff/worker/internal/testimage"
)

// fix is the image the real-container tests run: testapp, pushed to an
// in-process registry and pulled once into a store shared by the tests.
var fix fixture

type fixture struct {
	once     sync.Once
	err      error
	reg      *testimage.Registry
	store    *image.Store
	storeDir string
	ref      string
}

func (f *fixture) init() {
	f.reg = testimage.NewRegistry()
	appImg, err := testimage.AppImage()
	if err != nil {
		f.err = err
		return
	}
	if f.ref, err = f.reg.Push("testapp:v1", appImg); err != nil {
		f.err = err
		return
	}
	if f.storeDir, err = os.MkdirTemp("", "skiff-worker-images-"); err != nil {
		f.err = err
		return
	}
	cfg := image.DefaultConfig()
	cfg.DataDir = f.storeDir
	cfg.InsecureRegistries = []string{f.reg.Host}
	if f.store, err = image.Open(cfg); err != nil {
		f.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, f.err = f.store.Ensure(ctx, f.ref, image.PullIfNotPresent)
}

func (f *fixture) close() {
	if f.reg != nil {
		f.reg.Close()
	}
	if f.storeDir != "" {
		_ = os.RemoveAll(f.storeDir)
	}
}
