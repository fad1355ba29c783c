package cli

import (
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestParseResourceList(t *testing.T) {
	tests := []struct {
		flag, in string
		want     map[string]string // canonical quantities
		wantErr  []string
	}{
		{flag: "limits", in: "cpu=200m,memory=512Mi", want: map[string]string{"cpu": "200m", "memory": "512Mi"}},
		{flag: "limits", in: "cpu=0.5, memory=1G", want: map[string]string{"cpu": "500m", "memory": "1G"}},
		{flag: "requests", in: "ephemeral-storage=1Gi,hugepages-2Mi=4Mi,example.com/gpu=1,cpu=0",
			want: map[string]string{"ephemeral-storage": "1Gi", "hugepages-2Mi": "4Mi", "example.com/gpu": "1", "cpu": "0"}},
		{flag: "limits", in: "", want: nil},
		{flag: "limits", in: "cpu=lots,memory=512Mi", wantErr: []string{`--limits: invalid quantity "lots" for cpu: quantities must match the regular expression`}},
		{flag: "requests", in: "cpu", wantErr: []string{`--requests: "cpu": expected RESOURCE=QUANTITY`}},
		{flag: "requests", in: "cpu=", wantErr: []string{`--requests: "cpu=": expected RESOURCE=QUANTITY`}},
		{flag: "limits", in: "cpu=-1", wantErr: []string{`--limits: invalid quantity "-1" for cpu: must be greater than or equal to 0`}},
		{flag: "limits", in: "gpu=1,cpu=x", wantErr: []string{`--limits: unknown resource "gpu"`, `invalid quantity "x" for cpu`}},
	}
	for _, tc := range tests {
		t.Run(tc.flag+" "+tc.in, func(t *testing.T) {
			got, err := parseResourceList(tc.flag, tc.in)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := map[string]string{}
			for k, q := range got {
				s[k] = q.String()
			}
			if (tc.want == nil) != (got == nil) || !maps.Equal(s, tc.want) {
				t.Errorf("= %v, want %v", s, tc.want)
			}
		})
	}
}

func TestApplyResources(t *testing.T) {
	withResources := func() *pb.Object {
		obj := webDeployment()
		podSpecOf(obj).GetContainers()[1].Resources = &pb.ResourceRequirements{
			Limits: map[string]string{"cpu": "1000m", "memory": "1Gi"}, Requests: map[string]string{"cpu": "500m"}}
		return obj
	}
	tests := []struct {
		name             string
		containers       string
		limits, requests string
		changed          bool
		proxy            *pb.ResourceRequirements // afterwards
		app              *pb.ResourceRequirements
		wantErr          string
	}{
		{name: "one container", containers: "app", limits: "cpu=200m,memory=512Mi", requests: "cpu=100m", changed: true,
			app:   &pb.ResourceRequirements{Limits: map[string]string{"cpu": "200m", "memory": "512Mi"}, Requests: map[string]string{"cpu": "100m"}},
			proxy: &pb.ResourceRequirements{Limits: map[string]string{"cpu": "1000m", "memory": "1Gi"}, Requests: map[string]string{"cpu": "500m"}}},
		{name: "others keep their values", containers: "proxy", requests: "memory=256Mi", changed: true,
			proxy: &pb.ResourceRequirements{Limits: map[string]string{"cpu": "1000m", "memory": "1Gi"}, Requests: map[string]string{"cpu": "500m", "memory": "256Mi"}}},
		{name: "an equal quantity is no change", containers: "proxy", limits: "cpu=1", requests: "cpu=0.5"},
		{name: "request above limit named", containers: "*", limits: "cpu=200m", requests: "cpu=300m",
			wantErr: "container app: the cpu request 300m is more than its limit 200m: a request must be less than or equal to the limit; container proxy: the cpu request 300m"},
		{name: "request above an existing limit", containers: "proxy", requests: "memory=2Gi",
			wantErr: "container proxy: the memory request 2Gi is more than its limit 1Gi"},
		{name: "unknown container", containers: "db", limits: "cpu=1", wantErr: `unable to find container named "db"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e resourceEdit
			var err error
			if e.limits, err = parseResourceList("limits", tc.limits); err != nil {
				t.Fatal(err)
			}
			if e.requests, err = parseResourceList("requests", tc.requests); err != nil {
				t.Fatal(err)
			}
			obj := withResources()
			changed, err := applyResources(podSpecOf(obj), tc.containers, e)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || changed != tc.changed {
				t.Fatalf("= %v, %v; want %v", changed, err, tc.changed)
			}
			if !changed {
				if !proto.Equal(obj, withResources()) {
					t.Errorf("nothing changed, yet the object did")
				}
				return
			}
			cs := podSpecOf(obj).GetContainers()
			if !proto.Equal(cs[0].GetResources(), tc.app) {
				t.Errorf("app resources = %v, want %v", cs[0].GetResources(), tc.app)
			}
			if !proto.Equal(cs[1].GetResources(), tc.proxy) {
				t.Errorf("proxy resources = %v, want %v", cs[1].GetResources(), tc.proxy)
			}
		})
	}
}

func TestSetResourcesRefusesBadArgumentsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `--limits: invalid quantity "lots" for cpu`, "set", "resources", "deployment/web", "--limits=cpu=lots")
	refusedBeforeConnecting(t, `--requests: "cpu": expected RESOURCE=QUANTITY`, "set", "resources", "deployment/web", "--requests=cpu")
	refusedBeforeConnecting(t, "you must specify an update to requests or limits", "set", "resources", "deployment/web")
	refusedBeforeConnecting(t, "a pod's resource requirements can not be changed once the pod exists", "set", "resources", "pod/web-1", "--limits=cpu=1")
	refusedBeforeConnecting(t, "a Job's pod template can not be changed", "set", "resources", "jobs", "-l", "app=x", "--limits=cpu=1")
	refusedBeforeConnecting(t, "services have no containers", "set", "resources", "svc", "web", "--limits=cpu=1")
	refusedBeforeConnecting(t, "name the objects to set resources", "set", "resources", "--limits=cpu=1")
}
