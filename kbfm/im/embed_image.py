"""Embed the histology around each spot with an image encoder -> ``obsm["X_image"]``."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from anndata import AnnData

from .._cache import EmbeddingCache
from .._errors import KbfmInputError
from .._keys import IMAGE_KEY, MPP_KEY, SOURCE_IMAGE_KEY
from .._provenance import record_step
from .._settings import settings
from .._validate import check_adata
from ..encoders._image_backends import ImageEncoder
from ..encoders.image import (
    DEFAULT_IMAGE_ENCODER,
    ImageEncoderIdentity,
    get_image_encoder,
    identify_image_encoder,
)
from ..io._spatial import (
    MIN_ON_TISSUE,
    library_metadata,
    spatial_coords,
    spots_with_tissue,
)
from ..io.patches import (
    PatchDataset,
    PatchSpec,
    check_centers,
    check_mpp,
    tissue_fraction,
)
from ..io.slide import Slide, file_fingerprint, open_slide
from ._slide_facts import UNREAD, SlideFacts, load_facts, save_facts

logger = logging.getLogger(__name__)
_TTA_VIEWS = 8


class _PatchTransform:
    """Optional stain normalisation, then the encoder's own preprocessing."""

    def __init__(self, encoder: ImageEncoder, normalizer=None) -> None:
        self.encoder = encoder
        self.normalizer = normalizer

    def __call__(self, patch: np.ndarray):
        if self.normalizer is not None:
            patch = self.normalizer(patch)
        return self.encoder.preprocess(patch)


def _slide_source(
    adata: AnnData, slide: str | os.PathLike | Slide | None, library_id: str | None
) -> Path | Slide:
    """The slide to use, as given or from ``uns['spatial']``; not opened."""
    if isinstance(slide, Slide):
        return slide
    if slide is None:
        try:
            source = library_metadata(adata, library_id).get(SOURCE_IMAGE_KEY)
        except KbfmInputError:
            source = None
        if source is None:
            msg = (
                "No slide given and adata.uns['spatial'][library_id]['metadata'] has no "
                "'source_image_path'. Pass slide='path/to/full_resolution_image' (the image "
                "whose pixels obsm['spatial'] refers to)."
            )
            raise KbfmInputError(msg)
        slide = source
    return Path(slide).expanduser()


def _resolve_mpp(adata: AnnData, slide, mpp: float | None, library_id: str | None) -> None:
    """Set ``slide.mpp``: ``mpp``, else the slide's metadata, else the reader's value."""
    if mpp is not None:
        slide.mpp, slide.mpp_source = float(mpp), "user"
        return
    if slide.mpp is not None:
        return
    try:
        meta = library_metadata(adata, library_id)
    except KbfmInputError:
        meta = {}
    if meta.get(MPP_KEY):
        slide.mpp = float(meta[MPP_KEY])
        slide.mpp_source = str(meta.get("mpp_source", "adata"))
    slide.require_mpp()


class _SlideAccess:
    """The slide's facts from the cache when possible; the slide itself only on demand.

    A cache hit needs the facts (size, mpp, tissue mask, stain statistics), which are
    kept in the image cache by the slide's fingerprint; the slide is opened (and its
    facts computed and saved) only when they are missing or patches must be read.
    """

    def __init__(self, source: Path | Slide, store: EmbeddingCache | None) -> None:
        self.source = source
        self.store = store
        self.opened: Slide | None = source if isinstance(source, Slide) else None
        self.we_opened = False

    def open(self) -> Slide:
        if self.opened is None:
            self.opened = open_slide(self.source)
            self.we_opened = True
        return self.opened

    def close(self) -> None:
        if self.we_opened and self.opened is not None:
            self.opened.close()

    def _cached(self) -> SlideFacts | None:
        """The facts saved for this file (the file's own metadata mpp), or ``None``."""
        if self.store is None:
            return None
        if isinstance(self.source, Slide):
            return load_facts(self.store.root, self.source.fingerprint, self.source.path)
        if not self.source.exists():
            return None  # opening it gives the clear error
        return load_facts(self.store.root, file_fingerprint(self.source), self.source)

    def _resolved(self, saved: SlideFacts, adata: AnnData, mpp, library_id) -> SlideFacts | None:
        facts = replace(saved)
        if isinstance(self.source, Slide):  # the object's own size and mpp
            facts.dimensions = self.source.dimensions
            facts.mpp, facts.mpp_source = self.source.mpp, self.source.mpp_source
        try:
            _resolve_mpp(adata, facts, mpp, library_id)
        except LookupError:
            return None  # not known without reading the file's metadata
        return facts

    def facts(self, adata: AnnData, mpp, library_id, *, stain: bool) -> SlideFacts:
        """Facts with the mpp for this call resolved (and stain statistics if ``stain``)."""
        saved = self._cached()
        if saved is not None and (saved.reinhard is not None or not stain):
            facts = self._resolved(saved, adata, mpp, library_id)
            if facts is not None:
                return facts
        slide = self.open()
        if saved is None or saved.mpp_source == UNREAD:
            saved = SlideFacts.of(slide)
        if stain and saved.reinhard is None:
            saved.fit_stain(slide)
        if self.store is not None and not self.store.read_only:
            save_facts(self.store.root, saved)
        _resolve_mpp(adata, slide, mpp, library_id)  # the clear error when unknown
        return replace(saved, mpp=slide.mpp, mpp_source=slide.mpp_source)

    def for_patches(self, facts: SlideFacts) -> Slide:
        """The open slide, with the mpp resolved for this call."""
        slide = self.open()
        slide.mpp, slide.mpp_source = facts.mpp, facts.mpp_source
        return slide


def _tta_views(batch):
    import torch

    for k in range(4):
        rotated = torch.rot90(batch, k, dims=(-2, -1))
        yield rotated
        yield torch.flip(rotated, dims=(-1,))


def _encode_positions(
    slide: Slide,
    centers: np.ndarray,
    spec: PatchSpec,
    encoder: ImageEncoder,
    *,
    normalizer,
    tta: bool,
    batch_size: int,
    num_workers: int,
    desc: str,
) -> np.ndarray:
    from tqdm.auto import tqdm

    dataset = PatchDataset(slide, centers, spec, transform=_PatchTransform(encoder, normalizer))
    if num_workers > 0:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            persistent_workers=False,
            prefetch_factor=4,
        )
    else:
        loader = _prefetched_batches(dataset, batch_size)
    out = np.zeros((len(centers), encoder.dim), dtype=np.float32)
    n_batches = -(-len(centers) // batch_size)
    for batch, index in tqdm(loader, total=n_batches, disable=not settings.progress, desc=desc):
        if tta and encoder.model is not None:
            feats = sum(encoder.embed_batch(view) for view in _tta_views(batch)) / _TTA_VIEWS
        else:
            feats = encoder.embed_batch(batch)
        out[index.numpy()] = feats
    return out


def _prefetched_batches(dataset: PatchDataset, batch_size: int, depth: int = 2):
    """Yield collated ``(batch, index)`` pairs, reading ahead in one background thread.

    OpenSlide and PIL release the GIL while they decode, so the next batches are read and
    cut while the encoder runs on the current one, without forking processes.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from torch.utils.data import default_collate

    def load(start: int):
        stop = min(start + batch_size, len(dataset))
        return default_collate([dataset[i] for i in range(start, stop)])

    starts = iter(range(0, len(dataset), batch_size))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbfm-patches") as pool:
        pending = deque(pool.submit(load, s) for _, s in zip(range(depth), starts, strict=False))
        while pending:
            batch = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield batch


def _default_workers(slide: Slide) -> int:
    # A reader thread (see _prefetched_batches) keeps up with the encoder on CPU; forked
    # DataLoader workers pay off only when the forward pass runs elsewhere (CUDA).
    if slide.backend == "openslide" and settings.resolve_device() == "cuda":
        return max(0, min(4, (os.cpu_count() or 1) - 1))
    return 0


def embed_image(
    adata: AnnData,
    *,
    slide: str | os.PathLike | Slide | None = None,
    model: str | ImageEncoder = DEFAULT_IMAGE_ENCODER,
    library_id: str | None = None,
    mpp: float | None = None,
    patch: PatchSpec | None = None,
    context: Sequence[float] = (1.0,),
    stain_norm: str | None = None,
    tta: bool = False,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache: EmbeddingCache | bool = True,
    key_added: str = IMAGE_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Embed a patch of fixed physical size around every spot.

    Parameters
    ----------
    adata
        Spots with centres in ``obsm['spatial']`` (level-0 pixels of ``slide``).
    slide
        Image path or :class:`~kbfm.io.slide.Slide`; default: the ``source_image_path``
        stored by :func:`~kbfm.io.visium.read_visium` / :func:`~kbfm.io.legacy_st.read_legacy_st`.
    model
        Image encoder name (:func:`~kbfm.encoders.image.list_image_encoders`) or object.
    library_id
        Which ``uns['spatial']`` entry to read the image path and mpp from.
    mpp
        Microns per slide pixel; default: slide metadata, else the value the reader
        derived from the spot size.
    patch
        Patch geometry (default 224 px at 0.5 µm/px = 112 µm).
    context
        Field-of-view multipliers; one embedding per entry, concatenated (e.g.
        ``(1.0, 2.0)`` adds a 224 µm view of the neighbourhood at the same pixel size).
    stain_norm
        ``None`` or ``"reinhard"`` (colour statistics of the slide's tissue mapped onto a
        typical H&E section before encoding).
    tta
        Average embeddings over the 8 rotations/flips of each patch.
    weights, pretrained
        Passed to :func:`~kbfm.encoders.image.get_image_encoder`.
    batch_size
        Patches per forward pass (default ``settings.batch_size``).
    num_workers
        DataLoader worker processes reading patches. ``0`` reads ahead in one background
        thread instead (the default, except for OpenSlide slides encoded on CUDA, which
        get up to 4 processes).
    cache
        ``True`` (default cache under ``settings.cache_dir / "image"``), ``False`` or an
        :class:`~kbfm._cache.EmbeddingCache`. Keys hold the slide fingerprint, patch
        geometry, options, spot centre and model id/revision. The slide's size, mpp
        metadata, tissue mask and stain statistics are kept there too, so a rerun whose
        embeddings are all cached builds no model and never opens the slide.
    key_added
        ``obsm`` key of the embedding.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy). Writes ``obsm[key_added]`` (float32, ``n_obs x dim *
    len(context)``), ``obs['kbfm_image_pad_fraction']`` (part of the patch outside the
    image), ``obs['kbfm_image_tissue_fraction']`` and ``uns['kbfm']['embed_image']``.

    Examples
    --------
    >>> from kbfm.io.legacy_st import read_legacy_st
    >>> adata = read_legacy_st("C2.tsv.gz", "C2_selection.tsv", "C2.jpg")  # doctest: +SKIP
    >>> embed_image(adata)  # doctest: +SKIP
    >>> adata.obsm["X_image"].shape  # doctest: +SKIP
    (187, 1280)
    """
    check_adata(adata)
    mpp = check_mpp(mpp)
    if copy and getattr(adata, "isbacked", False):
        msg = (
            f"copy=True cannot copy an AnnData backed by {adata.filename}; embed_image "
            "writes only obsm and obs, so pass copy=False, or load it first with "
            "adata.to_memory()."
        )
        raise KbfmInputError(msg)
    adata = adata.copy() if copy else adata
    coords = spatial_coords(adata)
    spec = patch or PatchSpec()
    context = tuple(float(c) for c in context)
    if not context or min(context) <= 0:
        msg = f"context must be positive field-of-view multipliers, got {context}."
        raise KbfmInputError(msg)
    if stain_norm not in (None, "reinhard"):
        msg = f"stain_norm must be None or 'reinhard', got {stain_norm!r}."
        raise KbfmInputError(msg)
    # Cache keys first (the weights' identity, the slide's fingerprint and facts); the
    # model is built and the slide opened only when something must be encoded.
    identity = identify_image_encoder(model, pretrained=pretrained, weights=weights)
    store = None
    if cache is not False:
        store = (
            cache
            if isinstance(cache, EmbeddingCache)
            else EmbeddingCache(settings.cache_dir / "image")
        )
    access = _SlideAccess(_slide_source(adata, slide, library_id), store)
    try:
        facts = access.facts(adata, mpp, library_id, stain=stain_norm == "reinhard")
        centers = check_centers(facts, coords)
        field0 = spec.field_um / facts.mpp  # type: ignore[operator]
        tissue = tissue_fraction(facts.mask, facts.scale, centers, field0 / 2)
        _warn_off_tissue(tissue, facts)
        normalizer = facts.normalizer() if stain_norm == "reinhard" else None
        blocks, encoder = _embed_views(
            access,
            facts,
            centers,
            identity,
            store,
            views=[spec.with_context(factor) for factor in context],
            model=model,
            pretrained=pretrained,
            weights=weights,
            normalizer=normalizer,
            tta=tta,
            batch_size=batch_size or settings.batch_size,
            num_workers=num_workers,
        )
    finally:
        access.close()
    adata.obsm[key_added] = np.concatenate(blocks, axis=1)
    adata.obs["kbfm_image_pad_fraction"] = _pad_fraction(facts, centers, field0)
    adata.obs["kbfm_image_tissue_fraction"] = tissue.astype(np.float32)
    record_step(
        adata,
        "embed_image",
        key_added=key_added,
        model=identity.name if encoder is None else encoder.name,
        model_id=identity.model_id,
        revision=identity.revision,
        dim=int(adata.obsm[key_added].shape[1]),
        slide=str(Path(facts.path).resolve()),
        slide_fingerprint=facts.fingerprint,
        slide_mpp=float(facts.mpp),  # type: ignore[arg-type]
        mpp_source=facts.mpp_source,
        patch_size_px=int(spec.size_px),
        patch_mpp=float(spec.mpp),
        field_um=spec.field_um,
        context=list(context),
        stain_norm=stain_norm,
        tta=bool(tta),
        device=identity.device if encoder is None else encoder.device,
        from_cache=encoder is None,
    )
    logger.info("embed_image: added obsm[%r] %s", key_added, adata.obsm[key_added].shape)
    return adata if copy else None


def _embed_views(
    access: _SlideAccess,
    facts: SlideFacts,
    centers: np.ndarray,
    identity: ImageEncoderIdentity,
    store: EmbeddingCache | None,
    *,
    views: list[PatchSpec],
    model,
    pretrained: bool,
    weights,
    normalizer,
    tta: bool,
    batch_size: int,
    num_workers: int | None,
) -> tuple[list[np.ndarray], ImageEncoder | None]:
    """One embedding block per field of view: cached vectors, the rest encoded.

    Returns the blocks and the encoder, ``None`` when every vector came from the cache
    (then no model was built and the slide was not opened).
    """
    stain_key = "none" if normalizer is None else normalizer.key()
    # The slide's own resolution decides how many of its pixels one patch covers, so it
    # is part of the key: a rerun with another mpp must not reuse the other patches.
    slide_key = f"{facts.fingerprint}@{float(facts.mpp):.6g}mpp"  # type: ignore[arg-type]
    keys, vectors, todos = [], [], []
    for scaled in views:
        view_keys = [
            f"{slide_key}|{scaled.key()}|stain={stain_key}|tta={tta}|{x:.2f},{y:.2f}"
            for x, y in centers
        ]
        found: dict[int, np.ndarray] = {}
        todo = list(range(len(centers)))
        if store is not None:
            found, todo = store.get(identity.model_id, identity.revision, view_keys)
            if identity.dim is not None:  # a vector of another length is recomputed
                todo = sorted(todo + [i for i, v in found.items() if v.shape[0] != identity.dim])
                found = {i: v for i, v in found.items() if v.shape[0] == identity.dim}
        keys.append(view_keys)
        vectors.append(found)
        todos.append(todo)
    if not any(todos) and _one_length(vectors):
        return [np.stack([f[i] for i in range(len(centers))]) for f in vectors], None
    if store is not None:
        store.check_writable()  # warn before encoding, not after
    encoder = get_image_encoder(model, pretrained=pretrained, weights=weights)
    slide = access.for_patches(facts)
    workers = _default_workers(slide) if num_workers is None else int(num_workers)
    blocks = []
    for scaled, view_keys, cached in zip(views, keys, vectors, strict=True):
        found = {i: v for i, v in cached.items() if v.shape[0] == encoder.dim}
        todo = [i for i in range(len(centers)) if i not in found]
        block = np.zeros((len(centers), encoder.dim), dtype=np.float32)
        for i, vec in found.items():
            block[i] = vec
        if todo:
            block[todo] = _encode_positions(
                slide,
                centers[todo],
                scaled,
                encoder,
                normalizer=normalizer,
                tta=tta,
                batch_size=batch_size,
                num_workers=workers,
                desc=f"embed_image {encoder.name} x{scaled.mpp / views[0].mpp:g}",
            )
            if store is not None:
                store.put(
                    encoder.model_id, encoder.revision, [view_keys[i] for i in todo], block[todo]
                )
        blocks.append(block)
    return blocks, encoder


def _one_length(found: list[dict[int, np.ndarray]]) -> bool:
    """All cached vectors of one view have one length (unregistered encoders: dim unknown)."""
    return all(len({v.shape[0] for v in view.values()}) <= 1 for view in found)


def _pad_fraction(slide: Slide | SlideFacts, centers: np.ndarray, field0: float) -> np.ndarray:
    w, h = slide.dimensions
    x0, y0 = centers[:, 0] - field0 / 2, centers[:, 1] - field0 / 2
    inside_w = np.clip(np.minimum(x0 + field0, w) - np.maximum(x0, 0), 0, None)
    inside_h = np.clip(np.minimum(y0 + field0, h) - np.maximum(y0, 0), 0, None)
    return np.clip(1.0 - inside_w * inside_h / field0**2, 0.0, 1.0).astype(np.float32)


def _warn_off_tissue(tissue: np.ndarray, slide: Slide | SlideFacts) -> None:
    """The readers' alignment rule (io._spatial.warn_if_off_tissue) on the patch tissue."""
    fraction = spots_with_tissue(tissue)
    if np.isfinite(fraction) and fraction < MIN_ON_TISSUE:
        warnings.warn(
            f"Only {fraction:.0%} of spot patches hold tissue on {slide.path.name}: spots "
            "probably land off tissue. Check that obsm['spatial'] is in full-resolution "
            "pixels of this image (scale factors, image choice).",
            UserWarning,
            stacklevel=3,
        )
