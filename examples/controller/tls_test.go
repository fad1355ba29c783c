package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/cli"
	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/server"
)

// freeAddr returns a loopback TCP and UDP port free at this moment (raft
// and gossip need a concrete port; gossip uses both protocols).
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// startSecureMaster runs one master with a cluster token in this process
// and returns its API address and the token file.
func startSecureMaster(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := server.DefaultConfig()
	cfg.Name = "m1"
	cfg.DataDir = filepath.Join(dir, "m1")
	cfg.TokenFile = filepath.Join(dir, "token")
	cfg.RaftAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t)
	cfg.APIAddr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.BootstrapExpect = 1
	cfg.Controllers = nil // the mirror is the only controller under test
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("master: %v", err)
		}
	})
	return srv.APIAddr(), cfg.TokenFile
}

// eventually polls f until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
	}
}

// TestMirrorAgainstTLSCluster runs the program's wiring (client.Connection,
// client, newManager) against a real master with TLS: the controller
// connects with a controller token that `skiff token create --role
// controller --print-config` wrote into the CLI's configuration file, as
// the README says, and mirrors a ConfigMap.
func TestMirrorAgainstTLSCluster(t *testing.T) {
	for _, env := range []string{client.EnvServer, client.EnvTokenFile, client.EnvToken} {
		t.Setenv(env, "")
	}
	t.Setenv("SKIFF_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	addr, tokenFile := startSecureMaster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The operator: an admin certificate from the token file.
	acfg, err := client.Connection{Servers: addr, TokenFile: tokenFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	eventually(t, 30*time.Second, "namespace a created", func() error {
		_, err := admin.Create(ctx, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "a"}}))
		return err
	})

	// The operator makes a controller token with the real CLI command.
	root := cli.NewRootCommand("test")
	tokenCmd := &cobra.Command{Use: "token"}
	tokenCmd.AddCommand(cli.TokenCommands()...)
	root.AddCommand(tokenCmd)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--server", addr, "--token-file", tokenFile, "token", "create", "--role", "controller", "--print-config"})
	if err := root.Execute(); err != nil {
		t.Fatalf("token create: %v\n%s", err, out.String())
	}
	conf := filepath.Join(t.TempDir(), "controller.yaml")
	if err := os.WriteFile(conf, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SKIFF_CONFIG", conf)

	// The controller, configured by that file alone.
	ccfg, err := client.Connection{}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.TLS == nil || ccfg.PerRPC == nil {
		t.Fatalf("the controller would connect without TLS or without its token: %+v\n%s", ccfg, out.String())
	}
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := newManager(c, 2, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(mctx) }()
	defer func() { stop(); <-done }()

	src := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "settings",
		Annotations: map[string]string{MirrorTo: "a"}}, Data: map[string]string{"level": "info"}})
	eventually(t, 20*time.Second, "source created", func() error {
		_, err := admin.Create(ctx, src)
		return err
	})
	eventually(t, 30*time.Second, "the copy in a", func() error {
		cp, err := admin.Get(ctx, "ConfigMap", "a", "settings", client.ReadOptions{})
		if err != nil {
			return err
		}
		if cp.GetConfigMap().GetData()["level"] != "info" || cp.Meta().GetAnnotations()[MirrorOf] != "default/settings" {
			return fmt.Errorf("copy %v", cp)
		}
		return nil
	})

	// Without the cluster's credentials it cannot connect, and is told why.
	pcfg, err := client.Connection{Servers: addr, Insecure: true}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := client.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, _, err := plain.List(ctx, "ConfigMap", client.ListOptions{}); !errors.Is(err, client.ErrTransportMismatch) {
		t.Fatalf("a plaintext controller: %v, want the TLS mismatch error", err)
	}
}
