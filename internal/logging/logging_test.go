package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestJSONKeys(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Register(fs)
	if err := fs.Parse([]string{"--log-format", "json", "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, err := f.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("reconciled", "err", errors.New("boom"), "duration", 1500*time.Millisecond)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON object: %q: %v", buf.String(), err)
	}
	if rec["msg"] != "reconciled" || rec["level"] != "DEBUG" || rec["err"] != "boom" {
		t.Errorf("record %v", rec)
	}
	// slog.Duration in JSON: integer nanoseconds.
	if d, ok := rec["duration"].(float64); !ok || time.Duration(d) != 1500*time.Millisecond {
		t.Errorf("duration %v (%T), want 1500000000", rec["duration"], rec["duration"])
	}
}

func TestTextDefaultAndDebug(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Register(fs)
	f.Debug(true)
	var buf bytes.Buffer
	log, err := f.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "duration", 2*time.Second)
	if !strings.Contains(buf.String(), "level=DEBUG msg=hello duration=2s") {
		t.Errorf("text record %q", buf.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		f := Register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		_, err := f.Logger(&bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), args[0]) || !strings.Contains(err.Error(), args[1]) {
			t.Errorf("%v: err %v, want one naming the flag and value", args, err)
		}
	}
	if _, err := New(&bytes.Buffer{}, Options{Format: "yaml"}); err == nil {
		t.Error("New accepted format yaml")
	}
}

// logMethods are the slog calls whose arguments after the message are key/value pairs.
var logMethods = map[string]int{ // name -> index of the first key
	"Debug": 1, "Info": 1, "Warn": 1, "Error": 1,
	"DebugContext": 2, "InfoContext": 2, "WarnContext": 2, "ErrorContext": 2,
	"With": 0,
}

// attrFuncs are slog's attribute constructors: slog.String("err", ...).
var attrFuncs = map[string]bool{"String": true, "Any": true, "Int": true, "Int64": true, "Float64": true, "Duration": true, "Group": true}

// durationMethods turn a time.Duration into a number: logging their result loses the unit
// (and differs between daemons).
var durationMethods = map[string]bool{"Seconds": true, "Milliseconds": true, "Microseconds": true, "Nanoseconds": true, "Minutes": true, "Hours": true}

// TestRepositoryLogKeys walks every non-test Go file of the module and checks its log
// calls: errors under "err", durations as time.Duration values.
func TestRepositoryLogKeys(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	fset := token.NewFileSet()
	var problems []string
	report := func(n ast.Node, format string, args ...any) {
		problems = append(problems, fset.Position(n.Pos()).String()+": "+fmt.Sprintf(format, args...))
	}
	checkValue := func(v ast.Expr) {
		call, ok := v.(*ast.CallExpr)
		if !ok {
			return
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return
		}
		if durationMethods[sel.Sel.Name] {
			report(v, "duration logged as .%s(): log the time.Duration itself", sel.Sel.Name)
		}
		if sel.Sel.Name == "String" {
			if inner, ok := sel.X.(*ast.CallExpr); ok {
				if isel, ok := inner.Fun.(*ast.SelectorExpr); ok && (isel.Sel.Name == "Round" || isel.Sel.Name == "Truncate") {
					report(v, "duration logged as a string: log the time.Duration itself")
				}
			}
		}
	}
	checkKey := func(k ast.Expr) {
		lit, ok := k.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return
		}
		key, _ := strconv.Unquote(lit.Value)
		if key == "error" {
			report(k, `log key "error": use "err"`)
		}
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "build" || d.Name() == "node_modules") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "slog" && attrFuncs[sel.Sel.Name] && len(call.Args) == 2 {
				checkKey(call.Args[0])
				checkValue(call.Args[1])
				return true
			}
			first, ok := logMethods[sel.Sel.Name]
			if !ok || len(call.Args) <= first {
				return true
			}
			// A log call has a string message (not for With) then key/value pairs whose
			// keys are string literals; anything else is not a slog call.
			if first > 0 {
				if lit, ok := call.Args[first-1].(*ast.BasicLit); !ok || lit.Kind != token.STRING {
					return true
				}
			}
			args := call.Args[first:]
			for i := 0; i+1 < len(args); i += 2 {
				if lit, ok := args[i].(*ast.BasicLit); !ok || lit.Kind != token.STRING {
					break // an slog.Attr or a non-slog call: pairs end here
				}
				checkKey(args[i])
				checkValue(args[i+1])
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}
