package strictyaml

import (
	"strings"
	"testing"
)

type doc struct {
	Name  string `yaml:"name"`
	Inner struct {
		Port int `yaml:"port"`
	} `yaml:"inner"`
}

func TestDecode(t *testing.T) {
	var d doc
	if err := Decode([]byte("name: a\ninner:\n  port: 8\n"), &d); err != nil || d.Name != "a" || d.Inner.Port != 8 {
		t.Fatalf("got %+v, %v", d, err)
	}
	for in, want := range map[string]string{
		"":                        "empty document",
		"name: a\nnmae: b\n":      "field nmae not found",
		"inner:\n  prot: 8\n":     "field prot not found",
		"name: a\n---\nname: b\n": "more than one YAML document",
		"inner:\n  port: eight\n": "cannot unmarshal",
	} {
		var d doc
		err := Decode([]byte(in), &d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", in, err, want)
		}
	}
}
