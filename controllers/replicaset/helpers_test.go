package replicaset

import (
	"context"

	"github.com/skiff-sh/skiff/controllers/controllertest"
)

func contextWithCancel(h *controllertest.Harness) (context.Context, context.CancelFunc) {
	return context.WithCancel(h.Context())
}
