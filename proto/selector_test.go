package proto

import (
	"testing"
)

func TestAsSelector(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "frontend", "env": "prod"}
	api := map[string]string{"app": "api", "env": "dev"}
	none := map[string]string{}
	tests := []struct {
		name    string
		sel     *LabelSelector
		matches []map[string]string
		misses  []map[string]string
		str     string
	}{
		{"nil matches nothing", nil, nil, []map[string]string{web, api, none}, ""},
		{"empty matches everything", &LabelSelector{}, []map[string]string{web, api, none}, nil, ""},
		{"matchLabels", &LabelSelector{MatchLabels: map[string]string{"app": "web", "env": "prod"}},
			[]map[string]string{web}, []map[string]string{api, none}, "app=web,env=prod"},
		{"In and NotIn", &LabelSelector{MatchExpressions: []*LabelSelectorRequirement{
			{Key: "env", Operator: "In", Values: []string{"prod", "dev"}},
			{Key: "tier", Operator: "NotIn", Values: []string{"backend"}},
		}}, []map[string]string{web, api}, []map[string]string{none}, "env in (dev,prod),tier notin (backend)"},
		{"Exists and DoesNotExist", &LabelSelector{MatchExpressions: []*LabelSelectorRequirement{
			{Key: "app", Operator: "Exists"},
			{Key: "tier", Operator: "DoesNotExist"},
		}}, []map[string]string{api}, []map[string]string{web, none}, "app,!tier"},
		{"labels and expressions are ANDed", &LabelSelector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []*LabelSelectorRequirement{{Key: "env", Operator: "In", Values: []string{"dev"}}},
		}, nil, []map[string]string{web, api}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := tt.sel.AsSelector()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.matches {
				if !tt.sel.Matches(l) {
					t.Errorf("%v does not match %v", tt.sel, l)
				}
			}
			for _, l := range tt.misses {
				if tt.sel.Matches(l) {
					t.Errorf("%v matches %v", tt.sel, l)
				}
			}
			if tt.str != "" && sel.String() != tt.str {
				t.Errorf("String() = %q, want %q", sel.String(), tt.str)
			}
		})
	}
}

func TestAsSelectorErrors(t *testing.T) {
	for _, sel := range []*LabelSelector{
		{MatchExpressions: []*LabelSelectorRequirement{{Key: "a", Operator: "Gt", Values: []string{"1"}}}},
		{MatchExpressions: []*LabelSelectorRequirement{{Key: "a", Operator: "In"}}},
		{MatchExpressions: []*LabelSelectorRequirement{{Key: "a", Operator: "Exists", Values: []string{"x"}}}},
		{MatchLabels: map[string]string{"bad key!": "v"}},
		{MatchLabels: map[string]string{"k": "bad value!"}},
	} {
		if _, err := sel.AsSelector(); err == nil {
			t.Errorf("%v: no error", sel)
		}
		if sel.Matches(map[string]string{"a": "1", "k": "v"}) {
			t.Errorf("invalid selector %v matches", sel)
		}
	}
}

func TestParseQuantity(t *testing.T) {
	for s, milli := range map[string]int64{"100m": 100, "2": 2000, "0.5": 500, "1Ki": 1024000} {
		q, err := ParseQuantity(s)
		if err != nil {
			t.Fatal(err)
		}
		if q.MilliValue() != milli {
			t.Errorf("ParseQuantity(%q).MilliValue() = %d, want %d", s, q.MilliValue(), milli)
		}
	}
	for _, s := range []string{"", "1 GB", "abc", "1.2.3"} {
		if _, err := ParseQuantity(s); err == nil {
			t.Errorf("ParseQuantity(%q) succeeded", s)
		}
	}
}
