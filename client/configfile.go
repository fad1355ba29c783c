package client

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

// EnvToken names the environment variable with a user's bearer token (from
// skiff token create).
const EnvToken = "SKIFF_TOKEN"

// ConfigFile is the CLI's configuration file, written by `skiff dev` and
// read by every program that connects as the CLI does (Connection).
type ConfigFile struct {
	Servers []string `json:"servers"`
	// TokenFile is the cluster token (see connection.go); relative paths are
	// relative to the configuration file.
	TokenFile string `json:"tokenFile,omitempty"`
	// Token is a user's bearer token (skiff token create), used when there
	// is no tokenFile; it needs CA.
	Token string `json:"token,omitempty"`
	// CA is the cluster CA certificate (PEM) that a Token user trusts.
	CA string `json:"ca,omitempty"`
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
func WriteConfig(path string, cfg ConfigFile) error {
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
func readConfig() (ConfigFile, error) {
	var cfg ConfigFile
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

// security is how the CLI authenticates: plaintext, an admin certificate
// signed with the cluster token (tokenFile), or a bearer token with the
// pinned cluster CA.
type security struct {
	insecure  bool
	tokenFile string
	token     string
	caPEM     []byte
}

// resolveSecurity picks how to connect: --insecure, else the --token-file
// flag, the --token flag, $SKIFF_TOKEN_FILE, $SKIFF_TOKEN, then the
// configuration file's tokenFile, token or insecure. A bearer token's CA
// comes from --ca-file, else the configuration file's ca.
func resolveSecurity(flagTokenFile, flagToken, flagCAFile string, flagInsecure bool) (security, error) {
	var sec security
	switch {
	case flagInsecure:
		return security{insecure: true}, nil
	case flagTokenFile != "":
		return security{tokenFile: flagTokenFile}, nil
	case flagToken != "":
		sec.token = flagToken
	case os.Getenv(EnvTokenFile) != "":
		return security{tokenFile: os.Getenv(EnvTokenFile)}, nil
	case os.Getenv(EnvToken) != "":
		sec.token = os.Getenv(EnvToken)
	}
	cfg, err := readConfig()
	if err != nil {
		return sec, err
	}
	if sec.token == "" {
		switch {
		case cfg.TokenFile != "":
			return security{tokenFile: cfg.TokenFile}, nil
		case cfg.Token != "":
			sec.token = cfg.Token
		default:
			return security{insecure: cfg.Insecure}, nil
		}
	}
	switch {
	case flagCAFile != "":
		if sec.caPEM, err = os.ReadFile(flagCAFile); err != nil {
			return sec, fmt.Errorf("--ca-file: %w", err)
		}
	case cfg.CA != "":
		sec.caPEM = []byte(cfg.CA)
	default:
		return sec, fmt.Errorf("a bearer token needs the cluster CA to verify the masters: pass --ca-file or set ca in %s (skiff token create --print-config prints both)", ConfigPath())
	}
	return sec, nil
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
