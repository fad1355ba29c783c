package worker

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// meminfoTotal reads MemTotal (in KiB) from /proc/meminfo, independently
// of the code under test; 0 where there is no /proc/meminfo.
func meminfoTotal(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("MemTotal line %q: %v", sc.Text(), err)
			}
			return kib
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// TestDetectHost checks the capacity a node reports from its machine: the
// CPU count Go sees and MemTotal from /proc/meminfo.
func TestDetectHost(t *testing.T) {
	f := detectHost("v9.9.9")
	if want := strconv.Itoa(runtime.NumCPU()); f.cpu != want {
		t.Errorf("cpu = %q, want %q (runtime.NumCPU)", f.cpu, want)
	}
	mem, err := resource.ParseQuantity(f.memory)
	if err != nil {
		t.Fatalf("memory %q is not a quantity: %v", f.memory, err)
	}
	want := meminfoTotal(t) * 1024
	if mem.Value() != want {
		t.Errorf("memory = %s (%d bytes), want MemTotal %d bytes", f.memory, mem.Value(), want)
	}
	if runtime.GOOS == "linux" && mem.Sign() <= 0 {
		t.Errorf("memory = %s, want positive", f.memory)
	}
	cfg := DefaultConfig()
	cfg.Name = "w1"
	capacity := newNodeDescription(cfg, f, "127.0.0.1", 10250).node(time.Now()).GetStatus().GetCapacity()
	if capacity["cpu"] != f.cpu || capacity["memory"] != f.memory || capacity["pods"] != "110" {
		t.Errorf("registered capacity = %v, want the host's cpu %s and memory %s, 110 pods", capacity, f.cpu, f.memory)
	}
	if f.info.GetKubeletVersion() != "v9.9.9" || f.info.GetArchitecture() != runtime.GOARCH || f.info.GetOperatingSystem() != runtime.GOOS {
		t.Errorf("system info = %v", f.info)
	}
}

// TestNodeCapacity checks the capacity a node registers with: the host's by
// default with Kubernetes' 110 pods, and the configured values when set.
func TestNodeCapacity(t *testing.T) {
	facts := hostFacts{cpu: "6", memory: "16303944Ki", hostname: "box"}
	cfg := DefaultConfig()
	cfg.Name = "w1"
	tests := []struct {
		name string
		edit func(*Config)
		want map[string]string
	}{
		{"host", func(*Config) {}, map[string]string{"cpu": "6", "memory": "16303944Ki", "pods": "110"}},
		{"overrides", func(c *Config) { c.CapacityCPU, c.CapacityMemory, c.MaxPods = "2500m", "2048Mi", 7 },
			map[string]string{"cpu": "2500m", "memory": "2Gi", "pods": "7"}},
		{"cpu only", func(c *Config) { c.CapacityCPU = "3" },
			map[string]string{"cpu": "3", "memory": "16303944Ki", "pods": "110"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			tt.edit(&c)
			d := newNodeDescription(c, facts, "10.0.0.7", 10250)
			st := d.node(time.Now()).GetStatus()
			for k, v := range tt.want {
				if st.GetCapacity()[k] != v || st.GetAllocatable()[k] != v {
					t.Errorf("%s: capacity %q allocatable %q, want %q", k, st.GetCapacity()[k], st.GetAllocatable()[k], v)
				}
			}
			if len(st.GetCapacity()) != len(tt.want) {
				t.Errorf("capacity = %v, want %v", st.GetCapacity(), tt.want)
			}
		})
	}
}
