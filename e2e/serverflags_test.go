package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestServerSchedulerFlags: scheduler settings out of range are refused
// before anything starts, naming the flag and what to use.
func TestServerSchedulerFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scheduler-percentage-of-nodes-to-score", "101"}, "--scheduler-percentage-of-nodes-to-score 101: use 0 (adapts to the cluster's size, the default) to 100"},
		{[]string{"--scheduler-percentage-of-nodes-to-score", "-1"}, "--scheduler-percentage-of-nodes-to-score -1: use 0"},
		{[]string{"--scheduler-strategy", "Random"}, `--scheduler-strategy "Random": use LeastAllocated`},
	} {
		args := append([]string{"server", "--insecure", "--data-dir", t.TempDir()}, tc.args...)
		out, err := exec.Command(skiffBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("skiff %s: err %v, output:\n%s", strings.Join(args, " "), err, out)
		}
	}
}
