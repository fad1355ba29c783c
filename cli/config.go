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

// EnvTokenFile names the environment variable with the cluster token file.
const EnvTokenFile = "SKIFF_TOKEN_FILE"

// Config is the CLI's configuration file, written by `skiff dev`.
type Config struct {
	Servers []string `json:"servers"`
	// TokenFile is the cluster token (see tls.go); relative paths are
	// relative to the configuration file.
	TokenFile string `json:"tokenFile,omitempty"`
	// Insecure talks plaintext to masters run with --insecure.
	Insecure bool `json:"insecure,omitempty"`
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
	// It may name the token file, which is root-equivalent: keep it private.
	return os.WriteFile(path, data, 0o600)
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
	cfg, err := readConfig()
	return cfg.Servers, err
}

// readConfig reads the configuration file; a missing file is an empty
// configuration.
func readConfig() (Config, error) {
	var cfg Config
	path := ConfigPath()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || path == "" {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read %s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w (fix or delete the file)", path, err)
	}
	if cfg.TokenFile != "" && !filepath.IsAbs(cfg.TokenFile) {
		cfg.TokenFile = filepath.Join(filepath.Dir(path), cfg.TokenFile)
	}
	return cfg, nil
}

// resolveSecurity picks how to connect: --insecure, else the --token-file
// flag, then $SKIFF_TOKEN_FILE, then the configuration file's tokenFile
// (or its insecure).
func resolveSecurity(flagToken string, flagInsecure bool) (tokenFile string, insecure bool, err error) {
	switch {
	case flagInsecure:
		return "", true, nil
	case flagToken != "":
		return flagToken, false, nil
	case os.Getenv(EnvTokenFile) != "":
		return os.Getenv(EnvTokenFile), false, nil
	}
	cfg, err := readConfig()
	if err != nil {
		return "", false, err
	}
	return cfg.TokenFile, cfg.Insecure, nil
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
