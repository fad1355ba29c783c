package podnet

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestAllocatorSkipsReservedAndExhausts(t *testing.T) {
	a, err := NewAllocator("10.244.1.0/29") // 8 addresses: .2-.6 are pods'
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := range 5 {
		ip, err := a.Allocate(string(rune('a' + i)))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		switch ip.String() {
		case "10.244.1.0", "10.244.1.1", "10.244.1.7":
			t.Fatalf("handed out reserved address %s", ip)
		}
		if seen[ip.String()] {
			t.Fatalf("handed out %s twice", ip)
		}
		seen[ip.String()] = true
	}
	if _, err := a.Allocate("f"); err == nil || !strings.Contains(err.Error(), ErrExhausted.Error()) {
		t.Fatalf("allocation past the end: %v", err)
	}
	// The same pod gets the same address.
	ip1, _ := a.Get("a")
	again, err := a.Allocate("a")
	if err != nil || !again.Equal(ip1) {
		t.Fatalf("Allocate of an allocated pod = %s %v, want %s", again, err, ip1)
	}
	if err := a.Release("c"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("c"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	ip, err := a.Allocate("f")
	if err != nil || ip.String() != "10.244.1.4" {
		t.Fatalf("after a release: %s %v, want the released 10.244.1.4 (the only free one)", ip, err)
	}
}

func TestAllocatorCursorDelaysReuse(t *testing.T) {
	a, err := NewAllocator("10.244.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := a.Allocate("p1")
	if first.String() != "10.244.1.2" {
		t.Fatalf("first address %s, want 10.244.1.2", first)
	}
	if err := a.Release("p1"); err != nil {
		t.Fatal(err)
	}
	next, _ := a.Allocate("p2")
	if next.Equal(first) {
		t.Fatalf("a just released address %s was handed out again at once", first)
	}
}

func TestAllocatorPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	a, err := OpenAllocator("10.244.7.0/24", path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]net.IP{}
	for _, uid := range []string{"u1", "u2", "u3"} {
		ip, err := a.Allocate(uid)
		if err != nil {
			t.Fatal(err)
		}
		want[uid] = ip
	}
	if err := a.Release("u2"); err != nil {
		t.Fatal(err)
	}
	delete(want, "u2")
	if _, err := OpenAllocator("10.244.7.0/24", path); err == nil {
		t.Fatal("a second open of a file in use succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("late"); err == nil {
		t.Fatal("Allocate after Close succeeded (it would not be recorded)")
	}

	b, err := OpenAllocator("10.244.7.0/24", path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := b.Allocations()
	if len(got) != len(want) {
		t.Fatalf("after reopening: %v, want %v", got, want)
	}
	for uid, ip := range want {
		if !got[uid].Equal(ip) {
			t.Errorf("pod %s: %s after reopening, had %s", uid, got[uid], ip)
		}
		if again, _ := b.Allocate(uid); !again.Equal(ip) {
			t.Errorf("pod %s: Allocate after reopening gave %s, had %s", uid, again, ip)
		}
	}
	// New pods get neither an address in use nor the one just released
	// (the cursor persists).
	for i := range 50 {
		ip, err := b.Allocate("new" + string(rune('A'+i)))
		if err != nil {
			t.Fatal(err)
		}
		for uid, old := range want {
			if ip.Equal(old) {
				t.Fatalf("new pod got %s, the address of %s", ip, uid)
			}
		}
		if ip.String() == "10.244.7.3" && i == 0 {
			t.Fatalf("the address released before the restart was reused at once")
		}
	}

	// Another CIDR is refused while allocations of this one exist.
	b.Close()
	if _, err := OpenAllocator("10.244.8.0/24", path); err == nil || !strings.Contains(err.Error(), "10.244.7.0/24") {
		t.Fatalf("opening with another CIDR: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.PodCIDR = "10.244.1.0/24"
	ok.StateFile = "/var/lib/skiff/podnet.db"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"PodCIDR", func(c *Config) { c.PodCIDR = "" }},
		{"PodCIDR", func(c *Config) { c.PodCIDR = "10.244.1.1/24" }},
		{"PodCIDR", func(c *Config) { c.PodCIDR = "10.244.1.0/31" }},
		{"PodCIDR", func(c *Config) { c.PodCIDR = "10.245.1.0/24" }},
		{"PodCIDR", func(c *Config) { c.PodCIDR = "fd00::/64" }},
		{"PodCIDR", func(c *Config) { c.PodCIDR = "10.0.0.0/8" }},
		{"ClusterCIDR", func(c *Config) { c.ClusterCIDR = "nope" }},
		{"Bridge", func(c *Config) { c.Bridge = "" }},
		{"Bridge", func(c *Config) { c.Bridge = "a-very-long-bridge-name" }},
		{"Bridge", func(c *Config) { c.Bridge = "br 0" }},
		{"MTU", func(c *Config) { c.MTU = 100 }},
		{"StateFile", func(c *Config) { c.StateFile = "relative.db" }},
		{"Logger", func(c *Config) { c.Logger = nil }},
	} {
		c := ok
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
}

// Pods attached at the same time get distinct addresses, all recorded (the
// allocator writes without holding its lock, several pods per
// transaction), and releases of some of them while others allocate leave
// exactly the others recorded.
func TestAllocatorConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	a, err := OpenAllocator("10.1.0.0/24", path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	ips := make([]net.IP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := fmt.Sprintf("pod-%d", i)
			if ips[i], errs[i] = a.Allocate(uid); errs[i] != nil {
				return
			}
			// The same pod again, concurrently with others: same address.
			again, err := a.Allocate(uid)
			if err != nil || !again.Equal(ips[i]) {
				errs[i] = fmt.Errorf("second allocate: %v %v, want %v", again, err, ips[i])
				return
			}
			if i%2 == 1 {
				errs[i] = a.Release(uid)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pod %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i].String()]; dup && i%2 == 0 && j%2 == 0 {
			t.Fatalf("pods %d and %d both hold %s", j, i, ips[i])
		}
		seen[ips[i].String()] = i
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := OpenAllocator("10.1.0.0/24", path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := b.Allocations()
	if len(got) != n/2 {
		t.Fatalf("%d allocations after reopening, want %d: %v", len(got), n/2, got)
	}
	for i := 0; i < n; i += 2 {
		if ip := got[fmt.Sprintf("pod-%d", i)]; !ip.Equal(ips[i]) {
			t.Errorf("pod-%d: %v after reopening, want %v", i, ip, ips[i])
		}
	}
}
