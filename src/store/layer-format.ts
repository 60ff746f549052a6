/*
How a layer tree records what overlayfs needs beyond plain files: deletions (whiteouts) and directories
that hide everything below them (opaque). A store holds its layers in one of two formats, chosen when it
is created and recorded in `scratch-store.json`:

- `overlay-userxattr-1`, the kernel's own upper format as mounted with `userxattr`: a whiteout is a
  character device 0/0 named like what it deletes, an opaque directory carries `user.overlay.opaque=y`.
  Kernel overlay (as root or in a user namespace) and fuse-overlayfs both read it.
- `whiteout-files-1`, for stores on overlayfs (inside a container), where no 0/0 device can be made
  (overlayfs refuses to create one): a whiteout is an empty regular file `.wh.NAME`, an opaque directory
  holds an empty file `.wh..wh..opq` (the on-disk form of OCI layers). Only fuse-overlayfs reads it,
  which is also the only backend that can put an upper dir on overlayfs.

The same content gives the same exported tar in both formats.
*/

/** The layer formats a store may record. */
export type LayerFormat = 'overlay-userxattr-1' | 'whiteout-files-1';

export const layerFormats: readonly LayerFormat[] = ['overlay-userxattr-1', 'whiteout-files-1'];

/** The format of stores on any file system that can hold 0/0 character devices. */
export const defaultLayerFormat: LayerFormat = 'overlay-userxattr-1';

/** Prefix of a whiteout's name in `whiteout-files-1` (and in OCI layer tars). */
export const whiteoutPrefix = '.wh.';

/** The empty file that makes its directory opaque in `whiteout-files-1` (and in OCI layer tars). */
export const opaqueMarker = '.wh..wh..opq';

/** The xattr that makes a directory opaque in `overlay-userxattr-1`. */
export const opaqueXattr = 'user.overlay.opaque';

/** What `lstat` tells about an entry, as far as whiteouts go. */
export type EntryKind = {
	isCharacterDevice(): boolean;
	isFile(): boolean;
	rdev: number | bigint;
	size: number | bigint;
};

/**
The name a layer entry deletes from the layers below, when the entry is a whiteout; undefined for
anything else (the opaque marker included).
*/
export function whiteoutTarget(format: LayerFormat, name: string, stats: EntryKind): string | undefined {
	if (format === 'whiteout-files-1') {
		return name.startsWith(whiteoutPrefix) &&
			name !== opaqueMarker &&
			name.length > whiteoutPrefix.length &&
			stats.isFile() &&
			Number(stats.size) === 0
			? name.slice(whiteoutPrefix.length)
			: undefined;
	}

	return stats.isCharacterDevice() && Number(stats.rdev) === 0 ? name : undefined;
}

/** Whether a layer entry is the marker of an opaque directory (only `whiteout-files-1` has one). */
export function isOpaqueMarker(format: LayerFormat, name: string, stats: Pick<EntryKind, 'isFile'>): boolean {
	return format === 'whiteout-files-1' && name === opaqueMarker && stats.isFile();
}

/** Where the whiteout deleting `name` lives in a directory of a layer, relative to that directory. */
export function whiteoutName(format: LayerFormat, name: string): string {
	return format === 'whiteout-files-1' ? `${whiteoutPrefix}${name}` : name;
}

/**
Whether an extended attribute is overlay metadata rather than a file's own: overlayfs's
(`user.overlay.*`, `trusted.overlay.*`: opaque marks, redirects, origins) and fuse-overlayfs's
(`user.fuseoverlayfs.*`). Either kind of overlay reads them from any layer, whatever the store's format,
so they never travel in a layer tar: export leaves them out and import refuses them.
*/
export function isOverlayMetadataXattr(name: string): boolean {
	return (
		name.startsWith('user.overlay.') ||
		name.startsWith('trusted.overlay.') ||
		name.startsWith('user.fuseoverlayfs.')
	);
}
