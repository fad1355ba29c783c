package shim

import (
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// Record is container.json: everything the shim needs to create and start
// a container, written by the worker before it starts the shim.
type Record struct {
	ID          string            `json:"id"`
	PodUID      string            `json:"podUID"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Image       string            `json:"image"`
	ImageID     string            `json:"imageID"`
	CreatedAt   time.Time         `json:"createdAt"`
	LogPath     string            `json:"logPath"`
	LogMaxSize  int64             `json:"logMaxSize"`
	LogMaxFiles int               `json:"logMaxFiles"`
	Rootfs      Rootfs            `json:"rootfs"`
	Process     Process           `json:"process"`
	StopSignal  int               `json:"stopSignal"`
	// LibcontainerRoot is libcontainer's state root (shared by all
	// containers of the runtime).
	LibcontainerRoot string          `json:"libcontainerRoot"`
	Config           *configs.Config `json:"config"`
	// SeccompDefault, when set, is the seccomp filter the shim puts in
	// Config before it creates the container (Config.Seccomp is nil).
	SeccompDefault *SeccompDefault `json:"seccompDefault,omitempty"`
}
