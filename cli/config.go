package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// EnvServer names the environment variable with comma-separated master API
// addresses.
const EnvServer = "SKIFF_SERVER"

// Config is the CLI's configuration file, written by `skiff dev`.
type Config struct {
	Servers []string `json:"servers"`
}

// ConfigPath is where the CLI looks for its configuration:
// $SKIFF_CONFIG, else $XDG_CONFIG_HOME/skiff/config.yaml, else
// ~/.config/skiff/config.yaml.
func ConfigPath() string {
	if p := os.Getenv("SKIFF_CONFIG"); p != "" {
		return p
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "skiff", "config.yaml")
}

// WriteConfig writes cfg to path, creating its directory.
func WriteConfig(path string, cfg Config) error {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return os.WriteFile(path, data, 0o644)
}

// resolveServers picks the masters to talk to: the --server flag, then
// $SKIFF_SERVER, then the configuration file.
func resolveServers(flag string) ([]string, error) {
	if s := splitList(flag); len(s) > 0 {
		return s, nil
	}
	if s := splitList(os.Getenv(EnvServer)); len(s) > 0 {
		return s, nil
	}
	path := ConfigPath()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || path == "" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w (fix or delete the file)", path, err)
	}
	return cfg.Servers, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
