package cacheserver_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

const openAPIPath = "../docs/api/openapi.yaml"

// undocumentedHeaders are wire header constants no route sends yet.
var undocumentedHeaders = map[string]bool{
	"Diskcache-Shard": true, // for shard forwarding, which no handler does yet
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// spec is the parsed OpenAPI document with $ref resolution.
type spec struct {
	root map[string]any
}

func loadSpec(t testing.TB) *spec {
	t.Helper()
	b, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatalf("%s: %v", openAPIPath, err)
	}
	return &spec{root: root}
}

// lookup resolves a local reference "#/a/b/c".
func (s *spec) lookup(ref string) (any, error) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("only local references are used, got %q", ref)
	}
	var cur any = s.root
	for _, part := range strings.Split(p, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %q is not inside an object", ref, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("%s: no %q", ref, part)
		}
	}
	return cur, nil
}

// deref follows $ref (repeatedly) and merges the referencing object's
// other fields over the referenced one, as OpenAPI 3.1 allows for path
// items.
func (s *spec) deref(v any) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not an object: %T", v)
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return m, nil
	}
	target, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	base, err := s.deref(target)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range m {
		if k == "$ref" {
			continue
		}
		if _, dup := base[k]; dup {
			return nil, fmt.Errorf("%s: field %q both in the reference and beside it (undefined in OpenAPI)", ref, k)
		}
		out[k] = v
	}
	return out, nil
}

// operation is one documented method on one path.
type operation struct {
	method, path string
	op           map[string]any
	pathParams   []any // path item parameters, then the operation's
}

func (s *spec) operations(t testing.TB) map[string]operation {
	t.Helper()
	paths, ok := s.root["paths"].(map[string]any)
	if !ok {
		t.Fatal("no paths")
	}
	ops := map[string]operation{}
	for path, raw := range paths {
		item, err := s.deref(raw)
		if err != nil {
			t.Errorf("path %s: %v", path, err)
			continue
		}
		for field := range item {
			switch field {
			case "summary", "description", "parameters", "servers":
			default:
				if !containsString(httpMethods, field) {
					t.Errorf("path %s: unexpected field %q", path, field)
				}
			}
		}
		common, _ := item["parameters"].([]any)
		for _, m := range httpMethods {
			raw, ok := item[m]
			if !ok {
				continue
			}
			op, ok := raw.(map[string]any)
			if !ok {
				t.Errorf("%s %s is not an object", m, path)
				continue
			}
			own, _ := op["parameters"].([]any)
			key := strings.ToUpper(m) + " " + path
			ops[key] = operation{method: strings.ToUpper(m), path: path, op: op, pathParams: append(append([]any{}, common...), own...)}
		}
	}
	return ops
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var (
	templateParam = regexp.MustCompile(`\{([^}/]+)\}`)
	propertyName  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// goPatternToOpenAPI turns "GET /v1/keys/{key}" (a net/http pattern) into
// the documented "GET /v1/keys/{key}"; "{rest...}" wildcards become "{rest}".
func goPatternToOpenAPI(p string) (string, bool) {
	method, path, ok := strings.Cut(p, " ")
	if !ok || strings.Contains(method, "/") {
		return "", false
	}
	path = strings.ReplaceAll(path, "...}", "}")
	return method + " " + path, true
}

func newRouteServer(t *testing.T) *cacheserver.Server {
	t.Helper()
	cfg := cacheserver.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.InsecureNoAuth = true
	cfg.Fanout = 1
	s, err := cacheserver.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestOpenAPIMatchesRoutes keeps docs/api/openapi.yaml and the server's
// routes in step, both ways: every route the server registers is
// documented with the same method and path, and every documented operation
// is served by a route of that method and path.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	sp := loadSpec(t)
	ops := sp.operations(t)
	srv := newRouteServer(t)

	served := map[string]bool{}
	for _, p := range srv.Routes() {
		if p == "/" {
			continue // the catch-all that answers 404 not_found for unknown routes
		}
		r, ok := goPatternToOpenAPI(p)
		if !ok {
			t.Errorf("route %q has no method: every route must be documented per method", p)
			continue
		}
		served[r] = true
		if _, ok := ops[r]; !ok {
			t.Errorf("route %q is served but not documented in %s", r, openAPIPath)
		}
	}

	mux, isMux := srv.Mux(), true
	var keys []string
	for k := range ops {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		op := ops[k]
		ok := served[k]
		if isMux {
			// Ask the mux which route a request for this operation reaches:
			// this also covers routes registered outside Routes() (/metrics)
			// and routes shadowed by another pattern.
			concrete := templateParam.ReplaceAllStringFunc(op.path, func(m string) string {
				if m == "{index}" {
					return "0"
				}
				return "x"
			})
			req, err := http.NewRequest(op.method, "http://cacheserver"+concrete, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, pattern := mux.Handler(req)
			got, _ := goPatternToOpenAPI(pattern)
			ok = got == k
			if !ok && pattern != "/" {
				t.Errorf("%s is documented but a request for it reaches route %q", k, pattern)
				continue
			}
		}
		if !ok {
			t.Errorf("%s is documented in %s but not served", k, openAPIPath)
		}
	}
}

// TestOpenAPIIsWellFormed checks what a generator or reader relies on:
// references resolve, path templates and path parameters agree, every
// operation has responses and a tag, operationIds are unique, the public
// routes opt out of auth and nothing else does.
func TestOpenAPIIsWellFormed(t *testing.T) {
	sp := loadSpec(t)
	if v, _ := sp.root["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi: %q, want 3.1.x", v)
	}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := sp.lookup(ref); err != nil {
					t.Errorf("%s: %v", at, err)
				}
			}
			// JSON property names are snake_case; anything else is most
			// likely a YAML flow mapping split at a comma in a description.
			if props, ok := v["properties"].(map[string]any); ok {
				for name := range props {
					if !propertyName.MatchString(name) {
						t.Errorf("%s/properties: property %q (a comma in a flow mapping?)", at, name)
					}
				}
			}
			for k, x := range v {
				walk(at+"/"+k, x)
			}
		case []any:
			for i, x := range v {
				walk(at+"/"+strconv.Itoa(i), x)
			}
		case map[any]any:
			t.Errorf("%s: object with non-string keys (quote response codes)", at)
		}
	}
	walk("#", sp.root)

	public := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}
	ids := map[string]string{}
	for k, op := range sp.operations(t) {
		declared := map[string]bool{}
		for _, p := range op.pathParams {
			pm, err := sp.deref(p)
			if err != nil {
				t.Errorf("%s: parameter: %v", k, err)
				continue
			}
			if pm["in"] == "path" {
				declared[pm["name"].(string)] = true
				if pm["required"] != true {
					t.Errorf("%s: path parameter %v must be required", k, pm["name"])
				}
			}
		}
		inTemplate := map[string]bool{}
		for _, m := range templateParam.FindAllStringSubmatch(op.path, -1) {
			inTemplate[m[1]] = true
			if !declared[m[1]] {
				t.Errorf("%s: path parameter {%s} is not declared", k, m[1])
			}
		}
		for name := range declared {
			if !inTemplate[name] {
				t.Errorf("%s: declares path parameter %q that the path does not have", k, name)
			}
		}
		responses, _ := op.op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s: no responses", k)
		}
		for code := range responses {
			if n, err := strconv.Atoi(code); (err != nil || n < 100 || n > 599) && code != "default" {
				t.Errorf("%s: response %q is not a status code", k, code)
			}
		}
		if tags, _ := op.op["tags"].([]any); len(tags) == 0 {
			t.Errorf("%s: no tags", k)
		}
		if id, ok := op.op["operationId"].(string); ok {
			if other, dup := ids[id]; dup {
				t.Errorf("operationId %q used by %s and %s", id, k, other)
			}
			ids[id] = k
		}
		sec, hasSec := op.op["security"].([]any)
		switch {
		case public[k] && (!hasSec || len(sec) != 0):
			t.Errorf("%s is public: it must say security: []", k)
		case !public[k] && hasSec:
			t.Errorf("%s overrides security; only %v are public", k, public)
		}
	}
	if sec, _ := sp.root["security"].([]any); len(sec) == 0 {
		t.Error("no global security requirement (bearer auth)")
	}
}

// wireConstants returns the string constants of cacheserver/wire/wire.go
// whose names start with prefix, by name.
func wireConstants(t *testing.T, prefix string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "wire/wire.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out[name.Name] = v
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s* constants in wire/wire.go", prefix)
	}
	return out
}

// TestOpenAPIErrorCodesMatchWire checks that the ErrorCode enum is exactly
// the codes of wire.go and that its table explains each of them.
func TestOpenAPIErrorCodesMatchWire(t *testing.T) {
	sp := loadSpec(t)
	raw, err := sp.lookup("#/components/schemas/ErrorCode")
	if err != nil {
		t.Fatal(err)
	}
	schema := raw.(map[string]any)
	desc, _ := schema["description"].(string)
	documented := map[string]bool{}
	for _, c := range schema["enum"].([]any) {
		documented[c.(string)] = true
	}
	codes := map[string]bool{}
	for name, code := range wireConstants(t, "Code") {
		codes[code] = true
		if !documented[code] {
			t.Errorf("wire.%s = %q is not in the ErrorCode enum", name, code)
		}
		if !regexp.MustCompile("\\| `" + regexp.QuoteMeta(code) + "` \\| [0-9]{3} \\|").MatchString(desc) {
			t.Errorf("the ErrorCode table does not give the status of %q", code)
		}
	}
	for code := range documented {
		if !codes[code] {
			t.Errorf("ErrorCode enum has %q, which wire.go does not define", code)
		}
	}
}

// TestOpenAPIHeadersMatchWire checks that every Diskcache-* header of
// wire.go appears in some request parameter or response of the document.
func TestOpenAPIHeadersMatchWire(t *testing.T) {
	sp := loadSpec(t)
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["in"] == "header" {
				if n, ok := v["name"].(string); ok {
					seen[n] = true
				}
			}
			if h, ok := v["headers"].(map[string]any); ok {
				for n := range h {
					seen[n] = true
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	// Response headers are declared in components/responses and on
	// operations; component "headers" only name reusable definitions.
	walk(sp.root["paths"])
	comps, _ := sp.root["components"].(map[string]any)
	for _, section := range []string{"pathItems", "responses", "parameters"} {
		walk(comps[section])
	}
	for name, h := range wireConstants(t, "Header") {
		if undocumentedHeaders[h] {
			continue
		}
		if !seen[h] {
			t.Errorf("wire.%s (%s) appears in no parameter or response of %s", name, h, openAPIPath)
		}
	}
}

// TestOpenAPIServerConfigMatchesWire checks that the ServerConfig schema
// (GET /v1/config) has exactly the fields of wire.ServerConfig, and
// requires those always sent (no omitempty).
func TestOpenAPIServerConfigMatchesWire(t *testing.T) {
	sp := loadSpec(t)
	raw, err := sp.lookup("#/components/schemas/ServerConfig")
	if err != nil {
		t.Fatal(err)
	}
	schema := raw.(map[string]any)
	props, _ := schema["properties"].(map[string]any)
	required := map[string]bool{}
	for _, r := range schema["required"].([]any) {
		required[r.(string)] = true
	}
	fields := map[string]bool{}
	typ := reflect.TypeFor[wire.ServerConfig]()
	for i := range typ.NumField() {
		name, opts, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		always := !strings.Contains(opts, "omitempty")
		fields[name] = true
		if _, ok := props[name]; !ok {
			t.Errorf("wire.ServerConfig.%s (%q) is not in the ServerConfig schema", typ.Field(i).Name, name)
		}
		if required[name] != always {
			t.Errorf("ServerConfig schema: %q required %v, but the server always sends it: %v", name, required[name], always)
		}
	}
	for name := range props {
		if !fields[name] {
			t.Errorf("ServerConfig schema has %q, which wire.ServerConfig does not", name)
		}
	}
}
