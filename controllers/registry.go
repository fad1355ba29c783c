package controllers

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Registration describes a controller the Manager can run. Each built-in
// sub-package exports one (package builtin lists them all); an out-of-tree
// controller is one more Registration in the list given to the Manager.
type Registration struct {
	// Name is what --controllers uses ("scheduler", "replicaset").
	Name string
	// DisabledByDefault controllers run only when named explicitly: "*"
	// does not include them.
	DisabledByDefault bool
	// New builds the controller for one run (one leadership term): state
	// such as caches of assumed pods starts fresh every term. It should
	// ask env.Informers for what it reads and add its handlers, and do no
	// I/O of its own.
	New func(env Env) (Controller, error)
}

// ErrUnknownController is returned (wrapped) for a --controllers entry that
// names no registered controller.
var ErrUnknownController = errors.New("unknown controller")

// ParseControllers splits a --controllers flag value ("*,-scheduler") into
// its entries.
func ParseControllers(flag string) []string {
	var out []string
	for _, s := range strings.Split(flag, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Select applies a controller selection, kube-controller-manager style, to
// regs and returns the enabled ones in regs' order. Each entry is "*" (every
// controller not disabled by default), "name" (enable) or "-name"
// (disable); an explicit name wins over "*". An entry naming no registered
// controller is an error that names it.
func Select(selection []string, regs []Registration) ([]Registration, error) {
	known := make(map[string]bool, len(regs))
	names := make([]string, 0, len(regs))
	for _, r := range regs {
		known[r.Name] = true
		names = append(names, r.Name)
	}
	sort.Strings(names)
	star := false
	explicit := make(map[string]bool)
	for _, s := range selection {
		if s == "*" {
			star = true
			continue
		}
		name, on := strings.TrimPrefix(s, "-"), !strings.HasPrefix(s, "-")
		if !known[name] {
			return nil, fmt.Errorf("controllers: %q: %w (known: %s)", name, ErrUnknownController, strings.Join(names, ", "))
		}
		if prev, ok := explicit[name]; ok && prev != on {
			return nil, fmt.Errorf("controllers: %q is both enabled and disabled", name)
		}
		explicit[name] = on
	}
	var out []Registration
	for _, r := range regs {
		on, ok := explicit[r.Name]
		if !ok {
			on = star && !r.DisabledByDefault
		}
		if on {
			out = append(out, r)
		}
	}
	return out, nil
}
