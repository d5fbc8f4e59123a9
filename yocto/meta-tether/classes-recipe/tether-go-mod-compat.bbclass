# Lets one pinned module list (gomod:// entries, as written by OE-core's
# go-mod-update-modules class) build on every release this layer supports.
#
# wrynose (bitbake >= 2.12) has the gomod fetcher and this class changes
# nothing there but to pin GOMODCACHE where wrynose's go-mod puts it.
#
# scarthgap (bitbake 2.8) has neither the gomod fetcher nor
# GO_SRCURI_DESTSUFFIX, and its go-mod class expects the go command to
# download modules while compiling. This class then rewrites each gomod://
# entry into the plain https:// download the gomod fetcher would make (same
# proxy URL, same sha256sum), copies it to the same place in the module
# cache and, as the gomod fetcher does, unpacks go.mod next to each module
# zip. The build thus never needs the network after
# do_fetch on either release.

GO_SRCURI_DESTSUFFIX ??= "${@os.path.join(os.path.basename(d.getVar('S')), 'src', d.getVar('GO_IMPORT')) + '/'}"

# Where wrynose's go-mod class puts it. scarthgap's uses ${B}/.mod and wipes
# it at do_compile, which would throw away what do_unpack put there.
export GOMODCACHE = "${S}/pkg/mod"

# The module cache relative to the directory the fetcher unpacks into.
GO_MOD_CACHE_DIR = "${@os.path.relpath(d.getVar('GOMODCACHE'), d.getVar('UNPACKDIR') or d.getVar('WORKDIR'))}"

GO_MOD_PROXY ??= "proxy.golang.org"

# The licence files in LIC_FILES_CHKSUM live in module directories that the
# go command extracts from the zips at do_compile (wrynose's go-mod class
# orders the tasks the same way).
addtask do_compile before do_populate_lic

def tether_gomod_escape(path):
    """Module paths in proxy URLs and the cache escape capitals as !x."""
    import re
    return re.sub(r'([A-Z])', lambda m: '!' + m.group(1).lower(), path)

def tether_gomod_to_https(uri, d):
    """The https:// entry that fetches and places what a gomod:// entry does."""
    scheme, host, path, user, pswd, parm = bb.fetch2.decodeurl(uri)
    module = host + (path if path != '/' else '')
    version = parm['version']
    ext = '.mod' if parm.get('mod', '0') == '1' else '.zip'
    escaped = tether_gomod_escape(module)
    # A file copy at unpack keeps the basename of the file in DL_DIR, and the
    # module cache needs it to be <version>.zip or <version>.mod: hence a
    # DL_DIR path of its own per module.
    params = {
        'downloadfilename': 'go-mod/%s/@v/%s%s' % (escaped, version, ext),
        'subdir': os.path.join(d.getVar('GO_MOD_CACHE_DIR'), 'cache/download', escaped, '@v'),
        'unpack': '0',
    }
    if 'sha256sum' in parm:
        params['sha256sum'] = parm['sha256sum']
    proxy = d.getVar('GO_MOD_PROXY')
    return bb.fetch2.encodeurl(('https', proxy, '/%s/@v/%s%s' % (escaped, version, ext), '', '', params))

python __anonymous() {
    if hasattr(bb.fetch2, 'gomod'):
        return
    out = []
    for uri in (d.getVar('SRC_URI') or '').split():
        out.append(tether_gomod_to_https(uri, d) if uri.startswith('gomod://') else uri)
    d.setVar('SRC_URI', ' '.join(out))
    d.appendVarFlag('do_unpack', 'postfuncs', ' tether_gomod_unpack_mods')
}

# The gomod fetcher also writes <version>.mod beside each <version>.zip.
python tether_gomod_unpack_mods() {
    import glob, re, zipfile
    cache = os.path.join(d.getVar('GOMODCACHE'), 'cache', 'download')
    for zpath in glob.glob(os.path.join(cache, '**', '@v', '*.zip'), recursive=True):
        modpath = zpath[:-len('.zip')] + '.mod'
        if os.path.exists(modpath):
            continue
        rel = os.path.relpath(os.path.dirname(os.path.dirname(zpath)), cache)
        module = re.sub(r'!([a-z])', lambda m: m.group(1).upper(), rel)
        version = os.path.basename(zpath)[:-len('.zip')]
        with zipfile.ZipFile(zpath) as zf:
            try:
                data = zf.read('%s@%s/go.mod' % (module, version))
            except KeyError:
                data = ('module %s\n' % module).encode()
        with open(modpath, 'wb') as f:
            f.write(data)
}
