// Command argocdlua runs an Argo CD resource health script the way Argo CD does: under gopher-lua
// (Lua 5.1), with only the libraries Argo CD opens (base, package, table, and an os module reduced
// to time and date that only require("os") reaches), a one-second deadline, the object as the global
// `obj`, and the chunk's returned table read as {status, message}.
//
// stdin:  {"script": "...", "objects": [ {...}, ... ]}
// stdout: [ {"status": "Healthy", "message": "...", "error": ""}, ... ]  (one entry per object)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type input struct {
	Script  string                   `json:"script"`
	Objects []map[string]interface{} `json:"objects"`
}

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

// The health statuses Argo CD accepts from a script; anything else becomes Unknown there.
var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "argocdlua: reading input: %v\n", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(in.Objects))
	for _, obj := range in.Objects {
		out = append(out, health(in.Script, obj))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "argocdlua: %v\n", err)
		os.Exit(2)
	}
}

func health(script string, obj map[string]interface{}) result {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return result{Error: fmt.Sprintf("opening %s: %v", lib.name, err)}
		}
	}
	L.PreloadModule(lua.OsLibName, func(L *lua.LState) int {
		L.Push(L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{"time": osTime, "date": osDate}))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return result{Error: err.Error()}
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return result{Error: fmt.Sprintf("the script returned %s, not a table", L.Get(-1).Type())}
	}
	status := lua.LVAsString(ret.RawGetString("status"))
	message := lua.LVAsString(ret.RawGetString("message"))
	if !validStatus[status] {
		return result{Status: "Unknown", Message: "Lua returned an invalid health status", Error: "invalid status " + status}
	}
	return result{Status: status, Message: message}
}

// toLua converts decoded JSON the way Argo CD hands an object to a script: null becomes nil,
// numbers are Lua numbers, arrays are sequences, objects are tables keyed by string.
func toLua(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

func osTime(L *lua.LState) int {
	if L.GetTop() == 0 {
		L.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	t := L.CheckTable(1)
	field := func(name string, fallback int) int {
		if n, ok := t.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return fallback
	}
	when := time.Date(field("year", 1970), time.Month(field("month", 1)), field("day", 1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	L.Push(lua.LNumber(when.Unix()))
	return 1
}

func osDate(L *lua.LState) int {
	now := time.Now()
	format := L.OptString(1, "%c")
	if strings.HasPrefix(format, "!") {
		now, format = now.UTC(), format[1:]
	}
	if L.GetTop() >= 2 {
		now = time.Unix(L.CheckInt64(2), 0)
	}
	layouts := map[byte]string{'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05", 'c': "02 Jan 06 15:04 MST"}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] == '%' && i+1 < len(format) {
			if layout, ok := layouts[format[i+1]]; ok {
				b.WriteString(now.Format(layout))
				i++
				continue
			}
		}
		b.WriteByte(format[i])
	}
	L.Push(lua.LString(b.String()))
	return 1
}
