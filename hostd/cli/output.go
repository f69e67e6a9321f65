package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		// A tab or newline inside a value would break the columns.
		cols[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() { t.tw.Flush() }

// printJSON prints v indented, as AWS's shapes: the SDK's types with their wire names, and
// members that are not set left out rather than printed as null or "" (the SDK's zero
// enum value).
func (r *run) printJSON(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return r.failf("cannot encode JSON: %v", err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return r.failf("cannot encode JSON: %v", err)
	}
	out, err := json.MarshalIndent(prune(doc), "", "  ")
	if err != nil {
		return r.failf("cannot encode JSON: %v", err)
	}
	fmt.Fprintf(r.stdout, "%s\n", out)
	return exitOK
}

// prune drops null and empty-string members of objects, recursively.
func prune(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if x == nil || x == "" {
				delete(t, k)
				continue
			}
			t[k] = prune(x)
		}
	case []any:
		for i, x := range t {
			t[i] = prune(x)
		}
	}
	return v
}
