package proto

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// AsSelector converts s to a labels.Selector with Kubernetes' semantics
// (metav1.LabelSelectorAsSelector): a nil selector matches nothing, an empty
// one matches everything, matchLabels and matchExpressions are ANDed.
func (s *LabelSelector) AsSelector() (labels.Selector, error) {
	if s == nil {
		return labels.Nothing(), nil
	}
	if len(s.GetMatchLabels()) == 0 && len(s.GetMatchExpressions()) == 0 {
		return labels.Everything(), nil
	}
	reqs := make([]labels.Requirement, 0, len(s.GetMatchLabels())+len(s.GetMatchExpressions()))
	for _, k := range sortedKeys(s.GetMatchLabels()) {
		r, err := labels.NewRequirement(k, selection.Equals, []string{s.GetMatchLabels()[k]})
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, *r)
	}
	for i, e := range s.GetMatchExpressions() {
		var op selection.Operator
		switch e.GetOperator() {
		case "In":
			op = selection.In
		case "NotIn":
			op = selection.NotIn
		case "Exists":
			op = selection.Exists
		case "DoesNotExist":
			op = selection.DoesNotExist
		default:
			return nil, fmt.Errorf("matchExpressions[%d]: %q is not a valid label selector operator", i, e.GetOperator())
		}
		r, err := labels.NewRequirement(e.GetKey(), op, append([]string(nil), e.GetValues()...))
		if err != nil {
			return nil, fmt.Errorf("matchExpressions[%d]: %w", i, err)
		}
		reqs = append(reqs, *r)
	}
	return labels.NewSelector().Add(reqs...), nil
}

// Matches reports whether s selects an object carrying labels set. A nil or
// invalid selector matches nothing; an empty one matches everything.
func (s *LabelSelector) Matches(set map[string]string) bool {
	sel, err := s.AsSelector()
	return err == nil && sel.Matches(labels.Set(set))
}

// ParseQuantity parses a Kubernetes quantity ("100m", "1Gi", "2").
func ParseQuantity(s string) (resource.Quantity, error) {
	return resource.ParseQuantity(s)
}
