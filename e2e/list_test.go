package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// TestGetAllLargeList: `skiff get configmaps -A` on a cluster holding far
// more than one message's worth of objects (about 5.5 MB, over the masters'
// 1.25 MiB request limit and gRPC's default 4 MiB) prints every one of them,
// as a table, as names and as JSON. The masters stream the list in chunks,
// so even a gRPC client with the library's default limits lists it all.
func TestGetAllLargeList(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(30 * time.Second)
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if _, err := cl.Create(ctx, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "bulk"}})); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{} // namespace/name
	big := strings.Repeat("b", 900<<10)
	small := strings.Repeat("s", 500)
	for i := range 204 {
		ns, name, data := "default", fmt.Sprintf("small-%03d", i), small
		if i%2 == 1 {
			ns = "bulk"
		}
		if i%40 == 0 {
			name, data = fmt.Sprintf("big-%d", i/40), big
		}
		o := configMap(name, map[string]string{"data": data})
		o.Meta().Namespace = ns
		if _, err := cl.Create(ctx, o); err != nil {
			t.Fatalf("create %s/%s: %v", ns, name, err)
		}
		want[ns+"/"+name] = true
	}
	// Whatever else the cluster holds (ConfigMaps a master creates itself)
	// is listed too: compare with the client's own list.
	items, _, err := cl.List(ctx, "ConfigMap", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size := gproto.Size(&pb.ListResponse{Items: items}); size < 4<<20 {
		t.Fatalf("the ConfigMaps are %d bytes; the test needs more than 4 MiB", size)
	}
	all := map[string]bool{}
	for _, o := range items {
		all[o.Meta().GetNamespace()+"/"+o.Meta().GetName()] = true
	}
	for k := range want {
		if !all[k] {
			t.Fatalf("the client's list misses %s", k)
		}
	}

	t.Run("table", func(t *testing.T) {
		out, err := c.cli("", "get", "configmaps", "-A")
		if err != nil {
			t.Fatalf("skiff get configmaps -A: %v\n%.2000s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(all)+1 || !strings.HasPrefix(lines[0], "NAMESPACE") {
			t.Fatalf("%d lines, want a header and %d rows; first lines:\n%.1000s", len(lines), len(all), out)
		}
		got := map[string]bool{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			got[f[0]+"/"+f[1]] = true
		}
		for k := range all {
			if !got[k] {
				t.Fatalf("%s missing from the table", k)
			}
		}
	})

	t.Run("names", func(t *testing.T) {
		// A stale read is served by whichever master answers; it has every
		// object once it has applied the writes above.
		eventually(t, 30*time.Second, func() error {
			out, err := c.cli("", "get", "configmaps", "-A", "-o", "name", "--stale")
			if err != nil {
				return fmt.Errorf("skiff get configmaps -A -o name --stale: %v\n%.2000s", err, out)
			}
			if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != len(all) {
				return fmt.Errorf("%d names, want %d", n, len(all))
			}
			return nil
		})
	})

	t.Run("json", func(t *testing.T) {
		out, err := c.cli("", "get", "configmaps", "-A", "-o", "json")
		if err != nil {
			t.Fatalf("skiff get configmaps -A -o json: %v\n%.2000s", err, out)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name, Namespace string }
				Data     map[string]string
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("-o json is not JSON: %v", err)
		}
		if len(list.Items) != len(all) {
			t.Fatalf("%d items, want %d", len(list.Items), len(all))
		}
		for _, it := range list.Items {
			if strings.HasPrefix(it.Metadata.Name, "big-") && len(it.Data["data"]) != len(big) {
				t.Fatalf("%s/%s has %d bytes of data, want %d", it.Metadata.Namespace, it.Metadata.Name, len(it.Data["data"]), len(big))
			}
		}
	})

	t.Run("a client with gRPC's default message limits", func(t *testing.T) {
		tlsCfg, err := client.AdminTLS(c.token)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range c.masters {
			conn, err := grpc.NewClient(m.apiAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := pb.CollectList(pb.NewClusterClient(conn).List(ctx, &pb.ListRequest{Kind: "ConfigMap"}))
			conn.Close()
			if err != nil {
				t.Fatalf("list on %s: %v", m.name, err)
			}
			if len(resp.GetItems()) != len(all) || resp.GetResourceVersion() == 0 {
				t.Fatalf("list on %s: %d items at %d, want %d", m.name, len(resp.GetItems()), resp.GetResourceVersion(), len(all))
			}
		}
	})
}
