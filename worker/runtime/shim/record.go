package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Subcommand is the first argument of a shim's command line: the worker
// starts skiff-shim (or, without one, its own binary) as
// "<binary> runtime-shim CONTAINER_STATE_DIR".
const Subcommand = "runtime-shim"

// Reasons recorded in Exit.Reason, as in Kubernetes'
// ContainerStateTerminated.
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
	// ReasonUnknown: the shim died without recording an exit status.
	ReasonUnknown = "Unknown"
)

// Rootfs is the container's overlayfs rootfs.
type Rootfs struct {
	Lower  []string `json:"lower"` // lowest first
	Upper  string   `json:"upper"`
	Work   string   `json:"work"`
	Target string   `json:"target"`
}

// Process is the container's init process.
type Process struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	// User is "", "user", "uid", "user:group" or "uid:gid"; the shim
	// resolves names against the rootfs' /etc/passwd and /etc/group.
	User           string `json:"user,omitempty"`
	AdditionalGids []int  `json:"additionalGids,omitempty"`
	RunAsNonRoot   bool   `json:"runAsNonRoot,omitempty"`
	Terminal       bool   `json:"terminal,omitempty"`
}

// State is shim.json, written by the shim once the container runs (and
// launch.json, written by the worker with the shim's identity only).
type State struct {
	ShimPid       int       `json:"shimPid"`
	ShimStartTime uint64    `json:"shimStartTime"` // in clock ticks since boot, from /proc/PID/stat
	InitPid       int       `json:"initPid"`
	StartedAt     time.Time `json:"startedAt"`
	UID           int       `json:"uid"`
	GID           int       `json:"gid"`
	Groups        []int     `json:"groups,omitempty"`
	// Env is the init's final environment (HOME resolved); execs get it.
	Env []string `json:"env,omitempty"`
}

// Exit is exit.json, written by the shim when the container exits.
type Exit struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Ready is what the shim reports on its ready pipe (fd 3): the container's
// init pid, or why it did not start.
type Ready struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// ReadJSON reads the JSON file at path.
func ReadJSON[T any](path string) (*T, error) {
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

// WriteJSON writes v to path atomically.
func WriteJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
