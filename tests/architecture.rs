//! The shape of the house, checked: the modules of `src/` import each other without cycles,
//! and the top-level modules only downward in the layers the README's Architecture section
//! gives (there are no exceptions); no source file outgrows a reader.
//!
//! The import graph is built from the source with `syn`: an edge runs from a module to each
//! module its paths name (`use crate::…`, `super::…`, `self::…`, a child's name, and paths
//! written inside macro calls), whether in a `use` or inline. Declaring a child (`mod x;`) is
//! ownership, not use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path below the crate root (`[]` is the root).
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// The paths it names, as written (segments).
    paths: Vec<Vec<String>>,
    children: BTreeSet<String>,
}

/// Collects every path a module's own items name, leaving inline child modules to their own
/// entry.
struct Paths<'a> {
    here: ModPath,
    file: PathBuf,
    modules: &'a mut BTreeMap<ModPath, Module>,
    dir: PathBuf,
}

impl Paths<'_> {
    fn push(&mut self, segs: Vec<String>) {
        if let Some(m) = self.modules.get_mut(&self.here) {
            m.paths.push(segs);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut segs = prefix.clone();
                if n.ident != "self" {
                    segs.push(n.ident.to_string());
                }
                self.push(segs);
            }
            syn::UseTree::Rename(r) => {
                let mut segs = prefix.clone();
                if r.ident != "self" {
                    segs.push(r.ident.to_string());
                }
                self.push(segs);
            }
            syn::UseTree::Glob(_) => self.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Paths inside macro calls (`format!("{}", crate::clock::rfc3339(t))`) are tokens to
    /// syn: `a :: b :: c` runs starting at `crate`, `super` or `self` are read from them.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let tts: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                proc_macro2::TokenTree::Group(g) => self.tokens(g.stream()),
                proc_macro2::TokenTree::Ident(id)
                    if (id == "crate" || id == "super" || id == "self")
                        && is_colons(&tts, i + 1) =>
                {
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while is_colons(&tts, j) {
                        match tts.get(j + 2) {
                            Some(proc_macro2::TokenTree::Ident(next)) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    self.push(segs);
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_colons(tts: &[proc_macro2::TokenTree], at: usize) -> bool {
    matches!(
        (tts.get(at), tts.get(at + 1)),
        (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':' && a.spacing() == proc_macro2::Spacing::Joint
    )
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    // `pub(super)` and `pub(crate)` say who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let name = m.ident.to_string();
        let mut child = self.here.clone();
        child.push(name.clone());
        if let Some(parent) = self.modules.get_mut(&self.here) {
            parent.children.insert(name.clone());
        }
        match &m.content {
            Some((_, items)) => {
                self.modules.insert(
                    child.clone(),
                    Module {
                        file: self.file.clone(),
                        paths: Vec::new(),
                        children: BTreeSet::new(),
                    },
                );
                let mut inner = Paths {
                    here: child,
                    file: self.file.clone(),
                    modules: self.modules,
                    dir: self.dir.join(&name),
                };
                for item in items {
                    inner.visit_item(item);
                }
            }
            None => {
                let flat = self.dir.join(format!("{name}.rs"));
                let nested = self.dir.join(&name).join("mod.rs");
                let file = if flat.exists() { flat } else { nested };
                load(&file, child, self.dir.join(&name), self.modules);
            }
        }
    }
}

fn load(file: &Path, here: ModPath, dir: PathBuf, modules: &mut BTreeMap<ModPath, Module>) {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
    modules.insert(
        here.clone(),
        Module {
            file: file.to_path_buf(),
            paths: Vec::new(),
            children: BTreeSet::new(),
        },
    );
    let mut v = Paths {
        here,
        file: file.to_path_buf(),
        modules,
        dir,
    };
    for item in &ast.items {
        v.visit_item(item);
    }
}

/// The crate's modules and, for each, the modules it uses (itself excluded).
fn graph() -> (
    BTreeMap<ModPath, Module>,
    BTreeMap<ModPath, BTreeSet<ModPath>>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    load(&src.join("lib.rs"), Vec::new(), src.clone(), &mut modules);
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (here, m) in &modules {
        let out = edges.entry(here.clone()).or_default();
        for segs in &m.paths {
            let Some(abs) = resolve(here, segs, &modules) else {
                continue;
            };
            // The longest module prefix of the path is what it uses.
            let mut target = abs;
            while !modules.contains_key(&target) {
                target.pop();
            }
            if &target != here {
                if std::env::var_os("ARCH_EDGES").is_some() && !out.contains(&target) {
                    eprintln!(
                        "edge {} -> {} via {}",
                        name(here),
                        name(&target),
                        segs.join("::")
                    );
                }
                out.insert(target);
            }
        }
    }
    (modules, edges)
}

/// A path as written in module `here`, made absolute; `None` for paths that do not name a
/// module of this crate (std, other crates, local items).
fn resolve(
    here: &ModPath,
    segs: &[String],
    modules: &BTreeMap<ModPath, Module>,
) -> Option<ModPath> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some(here.iter().chain(&segs[1..]).cloned().collect()),
        "super" => {
            let mut base = here.clone();
            let mut rest = segs;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        // A child's name alone is a local value (a variable called like the module), not
        // the module: a module is never used as a value.
        _ if segs.len() >= 2 && modules[here].children.contains(first) => {
            Some(here.iter().chain(segs).cloned().collect())
        }
        _ => None,
    }
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components of more than one module (Tarjan), each as one cycle through
/// it, named.
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    impl<'a> T<'a> {
        fn go(&mut self, v: &'a ModPath) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.go(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.insert(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.out.push(one_cycle(self.edges, &scc));
                    if std::env::var_os("ARCH_VERBOSE").is_some() {
                        eprintln!(
                            "component: {}",
                            scc.iter().map(name).collect::<Vec<_>>().join(", ")
                        );
                    }
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.go(v);
        }
    }
    t.out
}

/// A shortest cycle through the first module of a component (breadth-first inside it).
fn one_cycle(
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    scc: &BTreeSet<ModPath>,
) -> Vec<ModPath> {
    let start = scc.iter().next().expect("a component has a module").clone();
    let mut prev: BTreeMap<ModPath, ModPath> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(&v).into_iter().flatten() {
            if !scc.contains(w) {
                continue;
            }
            if *w == start {
                let mut path = vec![v.clone()];
                let mut at = v.clone();
                while let Some(p) = prev.get(&at) {
                    path.push(p.clone());
                    at = p.clone();
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(w) && *w != start {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    scc.iter().cloned().collect()
}

#[test]
fn the_modules_import_each_other_without_cycles() {
    let (modules, edges) = graph();
    assert!(
        modules.len() > 20,
        "the graph holds the crate's modules: {}",
        modules.len()
    );
    let found = cycles(&edges);
    let named: Vec<String> = found
        .iter()
        .map(|c| {
            let files: BTreeSet<String> = c
                .iter()
                .map(|m| modules[m].file.display().to_string())
                .collect();
            format!(
                "{}  (in {})",
                c.iter().map(name).collect::<Vec<_>>().join(" -> "),
                files.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        named.is_empty(),
        "{} import cycle(s):\n{}",
        named.len(),
        named.join("\n")
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The check itself must be able to fail: a two-module loop and a three-module one.
    let m = |s: &str| -> ModPath { s.split("::").map(String::from).collect() };
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    edges.entry(m("a")).or_default().insert(m("b"));
    edges.entry(m("b")).or_default().insert(m("a"));
    edges.entry(m("c")).or_default().insert(m("d"));
    edges.entry(m("d")).or_default().insert(m("e"));
    edges.entry(m("e")).or_default().insert(m("c"));
    edges.entry(m("f")).or_default().insert(m("a"));
    let found = cycles(&edges);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|c| c.len() == 3), "a -> b -> a: {found:?}");
    assert!(
        found.iter().any(|c| c.len() == 4),
        "c -> d -> e -> c: {found:?}"
    );
}

/// The README's layers block: each top-level module's layer.
fn layers() -> BTreeMap<String, usize> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- layers -->")
        .expect("the README's Architecture section has a <!-- layers --> block");
    let end = readme[start..]
        .find("<!-- /layers -->")
        .expect("the layers block ends")
        + start;
    let mut out = BTreeMap::new();
    for line in readme[start..end].lines() {
        let Some((n, names)) = line.split_once(':') else {
            continue;
        };
        let Ok(n) = n.trim().parse::<usize>() else {
            continue;
        };
        for name in names.split_whitespace() {
            assert!(
                out.insert(name.to_string(), n).is_none(),
                "{name} is in two layers"
            );
        }
    }
    out
}

/// Top-level edges that go sideways or up in `layers`, as "a -> b"; also modules no layer
/// names.
fn against_layers(
    modules: &BTreeMap<ModPath, Module>,
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    layers: &BTreeMap<String, usize>,
) -> Vec<String> {
    let mut bad = BTreeSet::new();
    for m in modules.keys().filter(|m| m.len() == 1) {
        if !layers.contains_key(&m[0]) {
            bad.insert(format!("{} is in no layer of the README", m[0]));
        }
    }
    for (from, to) in edges
        .iter()
        .flat_map(|(f, ts)| ts.iter().map(move |t| (f, t)))
    {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue; // the crate root only declares and re-exports
        };
        if a == b {
            continue;
        }
        if let (Some(la), Some(lb)) = (layers.get(a), layers.get(b))
            && la <= lb
        {
            bad.insert(format!(
                "{a} (layer {la}) -> {b} (layer {lb}), from {}",
                name(from)
            ));
        }
    }
    bad.into_iter().collect()
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let (modules, edges) = graph();
    let layers = layers();
    assert!(layers.len() > 10, "{layers:?}");
    let bad = against_layers(&modules, &edges, &layers);
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
    // And the check can fail: an upward edge is reported.
    let mut up = edges.clone();
    up.entry(vec!["model".to_string()])
        .or_default()
        .insert(vec!["daemon".to_string()]);
    assert_eq!(against_layers(&modules, &up, &layers).len(), 1);
}
#[test]
fn no_source_file_outgrows_a_reader() {
    // 800 lines outside tests: files of tests (tests.rs) and the inline test module at a
    // file's end do not count.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut big = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.file_name().is_some_and(|n| n == "tests.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            if code > 800 {
                big.push(format!("{}: {code} lines", path.display()));
            }
        }
    }
    big.sort();
    assert!(big.is_empty(), "files over 800 lines:\n{}", big.join("\n"));
}
