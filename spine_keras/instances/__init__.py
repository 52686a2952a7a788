"""Vertebra-by-vertebra instance segmentation and identification: a sibling of the semantic path.

`table` and `metrics` describe and score instance label maps whose ids are anatomical levels
(`spine_keras.levels`); `baseline` turns a semantic vertebra mask into such a map by connected components;
`config`, `cases`, `samples`, `network`, `fit` and `traverse` are the iterative FCN of Lessmann et al. (2019):
a 3D network that sees an image patch and the vertebrae already found (the instance memory), segments the next
one and says whether it is completely visible, moved along the spine one vertebra at a time.
"""
