// Command kstatus reads Kubernetes objects (a JSON array on stdin) and prints, for each, the
// result of kstatus' Compute from sigs.k8s.io/cli-utils: the library Flux and kpt use to decide
// whether an object is Current, InProgress or Failed. The k3s-deploy tests feed it statuses the
// operator wrote, so the claims in docs/gitops.md are checked against the real rules.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading objects from stdin: %v\n", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(objects))
	for _, raw := range objects {
		// decoded as the apiserver's clients decode it: whole numbers are int64, not float64
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		res, err := status.Compute(obj)
		if err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		out = append(out, result{Status: res.Status.String(), Message: res.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(2)
	}
}
